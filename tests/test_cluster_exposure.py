"""A parameter server or worker says in its log that it listens on every interface without authentication."""
from pipeline.training.cluster import exposure_notice


def test_the_notice_names_the_real_listener_and_what_to_do():
    notice = exposure_notice("localhost:2222")
    assert "0.0.0.0:2222" in notice and "no authentication" in notice
    assert "private network" in notice and "port 2222" in notice
