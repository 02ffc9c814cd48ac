"""The property-gated LSTM of DUPN: behaviour properties drive the gates, never the candidate memory.

    i_t = σ(W_ie e_t + W_ih h_{t-1} + W_ip p_t + b_i)        (+ w_ci ⊙ c_{t-1} with peepholes)
    f_t = σ(W_fe e_t + W_fh h_{t-1} + W_fp p_t + b_f)        (+ w_cf ⊙ c_{t-1})
    o_t = σ(W_oe e_t + W_oh h_{t-1} + W_op p_t + b_o)        (+ w_co ⊙ c_t)
    c̃_t = tanh(W_ce e_t + W_ch h_{t-1} + b_c)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t,   h_t = o_t ⊙ tanh(c_t)

Every input-side term (e_t and p_t, all steps) is computed before the recurrence; the loop only
multiplies h_{t-1}. In training the loop's gradient is written by hand (backward_loop, checked
against TensorFlow's autodiff in tests/test_models_layers.py); outside training a lean unrolled
loop gives the same outputs (infer). A padded step (valid 0) leaves h and c unchanged and
outputs zeros, so the attention over the outputs sees nothing there and the final state is the
last real step's.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

GATES = ("input", "forget", "output", "candidate")   # column blocks of the kernels, in this order


@keras.saving.register_keras_serializable(package="dupn")
class PropertyGatedLSTM(keras.layers.Layer):
    """LSTM over behaviour embeddings whose gates also read the behaviour's properties.

    Args:
      units: U, width of h and c.
      input_dim: De, width of e_t.
      property_dim: Dp, width of p_t; 0 makes a plain LSTM over e_t (dupn-nobp, dupn-bpatt).
      peepholes: diagonal peephole connections from the cell to the three gates.
      l2: L2 penalty on the kernels.
      time_major: inputs and outputs are [N, B, ...] instead of [B, N, ...] (saves transposes).
    Call args:
      inputs: e [B, N, De]; properties: p [B, N, Dp] (required when property_dim > 0);
      valid: [B, N] 1 for real steps, 0 for padding (default: all real).
    Returns:
      h [B, N, U], zeros at padded steps.
    """

    def __init__(self, units: int, input_dim: int, property_dim: int = 0, peepholes: bool = False,
                 l2: float = 0.0, time_major: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.input_dim = input_dim
        self.property_dim = property_dim
        self.peepholes = peepholes
        self.l2 = l2
        self.time_major = time_major

    def build(self, input_shape=None):
        u = self.units
        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        self.input_kernel = self.add_weight("input_kernel", [self.input_dim, 4 * u],
                                            initializer="glorot_uniform", regularizer=reg)
        if self.property_dim:
            # Three gate blocks only: the property never reaches the candidate memory.
            self.property_kernel = self.add_weight("property_kernel", [self.property_dim, 3 * u],
                                                   initializer="glorot_uniform", regularizer=reg)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", [u, 4 * u],
                                                initializer="orthogonal", regularizer=reg)
        # Forget gate bias starts at 1 so early training keeps memory (Jozefowicz et al. 2015).
        self.bias = self.add_weight(
            "bias", [4 * u],
            initializer=lambda shape, dtype=None: tf.concat(
                [tf.zeros([u]), tf.ones([u]), tf.zeros([2 * u])], axis=0))
        if self.peepholes:
            self.peephole_weights = self.add_weight("peephole_weights", [3, u],
                                                    initializer="glorot_uniform")
        self.built = True

    def _joined(self, inputs, properties, padding=None):
        """(x, kernel): [e_t p_t] and [[W_e], [W_p 0]], so one product gives every input-side
        term (the property's block for the candidate is zero). With padding ([N, B], 1 at padded
        steps) x also carries that flag, and the kernel a row that drives a padded step's input
        gate to exactly 0 and its forget gate to exactly 1 (infer). Time-major, N static."""
        if inputs.shape[0] is None:
            raise ValueError(f"{self.name}: the sequence length must be static, got {inputs.shape}")
        parts, rows = [inputs], [self.input_kernel]
        if self.property_dim:
            if properties is None:
                raise ValueError(f"{self.name}: built with property_dim={self.property_dim} "
                                 "but called without properties")
            parts.append(tf.cast(properties, inputs.dtype))
            rows.append(tf.pad(self.property_kernel, [[0, 0], [0, self.units]]))
        if padding is not None:
            u = self.units
            parts.append(tf.cast(padding, inputs.dtype)[..., None])
            rows.append(tf.concat([tf.fill([1, u], -1e9), tf.fill([1, u], 1e9),
                                   tf.zeros([1, 2 * u])], 1))
        if len(parts) == 1:
            return inputs, self.input_kernel
        return tf.concat(parts, axis=-1), tf.concat(rows, axis=0)

    def input_projection(self, inputs, properties=None) -> list:
        """All input-side terms of all steps, before the recurrence: N tensors [B, 4U].

        Args:
          inputs: e [N, B, De] and properties: p [N, B, Dp], time-major, N static.
        Returns:
          [e_t p_t] @ [[W_e], [W_p 0]] + b for each step t (bias included).

        One matmul per step, not one over all N·B rows: on the CPUs measured the large product
        (and its gradients) ran about 30% slower than the same FLOPs in [B, D] blocks, which
        keep their output in cache; and the per-step results go straight into the loop's
        TensorList without a [N, B, 4U] copy either way (see docs/BENCHMARKS.md).
        """
        x, kernel = self._joined(inputs, properties)
        return [tf.nn.bias_add(tf.matmul(x_t, kernel), self.bias) for x_t in tf.unstack(x)]

    def call(self, inputs, properties=None, valid=None, training=None):
        if not self.time_major:
            # Transposing the narrower inputs is cheaper than transposing z.
            inputs = tf.transpose(inputs, [1, 0, 2])
            properties = None if properties is None else tf.transpose(properties, [1, 0, 2])
            valid = None if valid is None else tf.transpose(valid)
        dtype = inputs.dtype
        valid = tf.ones(tf.shape(inputs)[:2], dtype) if valid is None else tf.cast(valid, dtype)
        if training:
            z = self.input_projection(inputs, properties)                   # N x [B, 4U]
            peep = self.peephole_weights if self.peepholes else tf.zeros([3, self.units], dtype)
            h = recurrence(z, valid[:, :, None], self.recurrent_kernel, peep, self.peepholes)
        else:
            h = self.infer(inputs, properties, valid)
        return h if self.time_major else tf.transpose(h, [1, 0, 2])

    def infer(self, inputs, properties, valid):
        """call's outputs without a gradient to prepare for (evaluation, serving): one input
        product over all steps and the loop unrolled, keeping only h and c. Serving one user is a
        batch of 1, where the op count, not the FLOPs, sets the time: the training loop, which
        also saves each step's gates for its backward pass, took 5.9 ms of a request's user part
        and this one 3.8 (dupn, N = 100; docs/BENCHMARKS.md). Time-major in and out."""
        # A padded step's input gate is driven to exactly 0 and its forget gate to exactly 1, so
        # c stays as it was without a select (one op fewer a step; the ops set the time).
        x, kernel = self._joined(inputs, properties, padding=1.0 - valid)
        u = self.units
        z = tf.nn.bias_add(tf.einsum("nbd,dk->nbk", x, kernel), self.bias)     # [N, B, 4U]
        h = c = tf.zeros([tf.shape(z)[1], u], z.dtype)
        outputs = []
        for z_t, m in zip(tf.unstack(z), tf.unstack(valid[:, :, None] > 0)):
            gates = z_t + tf.matmul(h, self.recurrent_kernel)
            if self.peepholes:
                gi, gf, go, gc = tf.split(gates, 4, axis=1)
                peep = self.peephole_weights
                i, f = tf.sigmoid(gi + peep[0] * c), tf.sigmoid(gf + peep[1] * c)
                c_new = f * c + i * tf.tanh(gc)
                o = tf.sigmoid(go + peep[2] * c_new)
            else:
                pre_sig, gc = tf.split(gates, [3 * u, u], axis=1)
                i, f, o = tf.split(tf.sigmoid(pre_sig), 3, axis=1)
                c_new = f * c + i * tf.tanh(gc)
            # A padded step keeps the state (c by its saturated gates).
            h, c = tf.where(m, o * tf.tanh(c_new), h), c_new
            outputs.append(h)
        return tf.stack(outputs) * valid[:, :, None]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "input_dim": self.input_dim,
                "property_dim": self.property_dim, "peepholes": self.peepholes, "l2": self.l2,
                "time_major": self.time_major}


def _array(steps, dtype, width, flow=None) -> tf.TensorArray:
    if flow is not None:
        return tf.TensorArray(dtype, flow=flow)
    return tf.TensorArray(dtype, size=steps, element_shape=[None, width])


def _previous(array: tf.TensorArray, t, dtype) -> tf.Tensor:
    """array[t - 1], or zeros at t = 0 (the initial state)."""
    return array.read(tf.maximum(t - 1, 0)) * tf.cast(t > 0, dtype)


def forward_loop(z, valid, recurrent_kernel, peep, use_peepholes: bool):
    """The LSTM loop over precomputed input terms, keeping what the backward pass needs.

    Args:
      z: N tensors [B, 4U], the input-side terms of each step (bias included), gate blocks in
        GATES order.
      valid: [N, B, 1] float, 1 for real steps, 0 for padding.
      recurrent_kernel: [U, 4U]; peep: [3, U] peephole weights (input, forget, output gates).
    Returns:
      h_t after each step [N, B, U] (a padded step repeats the previous state), then the flows
      (TensorList handles) of h_t, c_t, the sigmoid gates (i, f, o), the candidate c̃ and
      tanh(c_t), per step. Handing the lists to backward_loop as they are, rather than stacked,
      saves copying about 7 [N, B, U] tensors a step.
    """
    u = recurrent_kernel.shape[0]
    steps, batch, dtype = len(z), tf.shape(z[0])[0], z[0].dtype
    # TensorArrays: writing and reading their elements copies nothing (slicing a tensor in the
    # loop would, and its gradient would be a full-size tensor per step).
    zs = _array(steps, dtype, 4 * u)
    for t, z_t in enumerate(z):
        zs = zs.write(t, z_t)
    ms = tf.TensorArray(tf.bool, size=steps, element_shape=[None, 1]).unstack(valid > 0)
    zero = tf.zeros([batch, u], dtype)

    def step(t, h, c, hs, cs, sigs, cands, tanh_cs):
        gates = zs.read(t) + tf.matmul(h, recurrent_kernel)
        if use_peepholes:
            gi, gf, go, gc = tf.split(gates, 4, axis=1)
            i, f, g = tf.sigmoid(gi + peep[0] * c), tf.sigmoid(gf + peep[1] * c), tf.tanh(gc)
            c_new = f * c + i * g
            o = tf.sigmoid(go + peep[2] * c_new)
            sig = tf.concat([i, f, o], axis=1)
        else:
            # One sigmoid over the three gate blocks: fewer, larger ops per step.
            pre_sig, gc = tf.split(gates, [3 * u, u], axis=1)
            sig, g = tf.sigmoid(pre_sig), tf.tanh(gc)
            i, f, o = tf.split(sig, 3, axis=1)
            c_new = f * c + i * g
        tanh_c = tf.tanh(c_new)
        m = ms.read(t)
        # A padded step keeps the state.
        h_next = tf.where(m, o * tanh_c, h)
        c_next = tf.where(m, c_new, c)
        return (t + 1, h_next, c_next, hs.write(t, h_next), cs.write(t, c_next),
                sigs.write(t, sig), cands.write(t, g), tanh_cs.write(t, tanh_c))

    arrays = [_array(steps, dtype, w) for w in (u, u, 3 * u, u, u)]
    loop = tf.while_loop(lambda t, *_: t < steps, step, (0, zero, zero, *arrays),
                         maximum_iterations=steps)
    return (loop[3].stack(), *(a.flow for a in loop[3:]))


def backward_loop(d_out, valid, recurrent_kernel, peep, h_flow, c_flow, sig_flow, cand_flow,
                  tanh_flow, use_peepholes: bool):
    """Back-propagation through time of forward_loop (outputs = valid * h), by hand.

    The kernel's gradient is summed inside the loop: those matmuls do not feed the next step, so
    they run beside the chain of dependent work instead of after it.

    Returns:
      gradients of z (N tensors [B, 4U]), of the recurrent kernel [U, 4U] and of the
      peepholes [3, U].
    """
    u = recurrent_kernel.shape[0]
    steps, batch = d_out.shape[0], tf.shape(d_out)[1]
    dtype = d_out.dtype
    hs, cs, sigs, cands, tanh_cs = (_array(steps, dtype, None, flow) for flow in
                                    (h_flow, c_flow, sig_flow, cand_flow, tanh_flow))
    d_outs = _array(steps, dtype, u).unstack(d_out * valid)
    mfs = _array(steps, dtype, 1).unstack(valid)
    ms = tf.TensorArray(tf.bool, size=steps, element_shape=[None, 1]).unstack(valid > 0)
    kernel_t = tf.transpose(recurrent_kernel)
    zero = tf.zeros([batch, u], dtype)

    def step(k, dh, dc, d_kernel, d_peep, d_gates):
        t = steps - 1 - k
        m, mf = ms.read(t), mfs.read(t)
        sig, g, tanh_c = sigs.read(t), cands.read(t), tanh_cs.read(t)
        c_before = _previous(cs, t, dtype)
        i, f, o = tf.split(sig, 3, axis=1)
        dh_new = mf * dh + d_outs.read(t)            # zero at padded steps
        d_o = dh_new * tanh_c
        dc_new = mf * dc + dh_new * o * (1.0 - tanh_c * tanh_c)
        if use_peepholes:
            d_go = d_o * o * (1.0 - o)
            dc_new += d_go * peep[2]
            d_gi, d_gf = dc_new * g * i * (1.0 - i), dc_new * c_before * f * (1.0 - f)
            d_sig = tf.concat([d_gi, d_gf, d_go], axis=1)
            dc_prev = dc_new * f + d_gi * peep[0] + d_gf * peep[1]
            # c_t is c_new wherever d_go is not zero (real steps)
            d_peep += tf.stack([tf.reduce_sum(d_gi * c_before, 0),
                                tf.reduce_sum(d_gf * c_before, 0),
                                tf.reduce_sum(d_go * cs.read(t), 0)])
        else:
            d_sig = tf.concat([dc_new * g, dc_new * c_before, d_o], axis=1) * (sig * (1.0 - sig))
            dc_prev = dc_new * f
        d_a = tf.concat([d_sig, dc_new * i * (1.0 - g * g)], axis=1)
        d_kernel += tf.matmul(_previous(hs, t, dtype), d_a, transpose_a=True)
        return (k + 1, tf.where(m, tf.matmul(d_a, kernel_t), dh), tf.where(m, dc_prev, dc),
                d_kernel, d_peep, d_gates.write(t, d_a))

    loop = tf.while_loop(lambda k, *_: k < steps, step,
                         (0, zero, zero, tf.zeros_like(recurrent_kernel), tf.zeros_like(peep),
                          _array(steps, dtype, 4 * u)),
                         maximum_iterations=steps)
    return [loop[5].read(t) for t in range(steps)], loop[3], loop[4]


def _make_recurrence(use_peepholes: bool):
    # Traced once per input shape and shared by every model in the process. (Not
    # reduce_retracing: the loops need the static width U of the kernel.)
    forward = tf.function(lambda *a: forward_loop(*a, use_peepholes), autograph=False)
    backward = tf.function(lambda *a: backward_loop(*a, use_peepholes), autograph=False)

    @tf.custom_gradient
    def run(valid, recurrent_kernel, peep, *z):
        # No tape may look inside the loop: its gradient is `grad`.
        h, *flows = forward([tf.stop_gradient(z_t) for z_t in z],
                            *(tf.stop_gradient(x) for x in (valid, recurrent_kernel, peep)))

        def grad(d_out):
            d_z, d_kernel, d_peep = backward(d_out, valid, recurrent_kernel, peep, *flows)
            return (tf.zeros_like(valid), d_kernel, d_peep, *d_z)

        return valid * h, grad

    return run


RECURRENCES = {peep: _make_recurrence(peep) for peep in (False, True)}


def recurrence(z, valid, recurrent_kernel, peep, use_peepholes: bool = False):
    """h [N, B, U] of the loop over z (N tensors [B, 4U], see forward_loop), with a
    hand-written gradient."""
    return RECURRENCES[use_peepholes](valid, tf.convert_to_tensor(recurrent_kernel),
                                      tf.convert_to_tensor(peep), *z)
