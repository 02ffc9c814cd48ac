"""A parameter server or worker says in its log that it listens on every interface without
authentication; `--local-cluster` runs in a network of its own (loopback only) where it can."""
import socket
import subprocess
import sys
import textwrap

import pytest

from pipeline.training.cluster import exposure_notice, private_network_command


def test_the_notice_names_the_real_listener_and_what_to_do():
    notice = exposure_notice("localhost:2222")
    assert "0.0.0.0:2222" in notice and "no authentication" in notice
    assert "private network" in notice and "port 2222" in notice


# Listens as TensorFlow's servers do (0.0.0.0), checks that loopback connects inside, reports.
LISTENER = textwrap.dedent("""
    import socket, sys
    from pipeline.training import cluster
    cluster.loopback_up()
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()
    port = server.getsockname()[1]
    socket.create_connection(("127.0.0.1", port), 5).close()
    print(sorted(cluster.interfaces()), cluster.in_private_network(), port, flush=True)
    sys.stdin.readline()          # listening until the test has tried to reach the port
""")


def test_a_listener_on_every_interface_in_the_private_network_is_out_of_reach():
    command, why = private_network_command([sys.executable, "-c", LISTENER])
    if command is None:
        pytest.skip(f"no network namespace here: {why}")
    inside = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        names, private, port = inside.stdout.readline().rsplit(" ", 2)
        assert names == "['lo']" and private == "True"
        # From this network the port is free (the listener is in another stack) and refuses.
        with socket.socket() as here:
            here.bind(("0.0.0.0", int(port)))
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(port)), 2).close()
    finally:
        inside.communicate("done\n", timeout=30)
    assert inside.returncode == 0
