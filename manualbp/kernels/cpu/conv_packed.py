"""Stride-1 convolutions on the 8 x 32 register tile of ``tile.py``: forward, grad-input, grad-weight.

Derivation: derivations/04-conv2d.md ((K1), (K4), (K6), (K8), (K9)); readable twins:
``reference.conv2d_forward``, ``reference.conv2d_grad_input``, ``reference.conv2d_grad_weight``
(``tests/test_kernels.py`` and ``tests/test_packed.py`` hold them equal).  How each pass maps onto the
tile -- output positions x output channels, or the tile turned around for fewer than 32 output channels,
and grad-weight on channels-last images -- is described at the top of ``tile.py``; the wrappers that
choose among these kernels are in ``conv.py``.

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
PH/PW padding, HP/WP padded size, P = OH*OW output positions, R = C*KH*KW taps.
"""
import numpy as np
from numba import njit, prange

from .tile import MR, NR, ONE, U1, YES, ZERO, tile8x16, tile8x32


@njit(cache=True)
def _pad_flat(xn, xf, PH, PW, WE, SW):
    """xf (flat) = xn (C, H, W) padded with PH rows and PW columns of zeros, channel c at c*HP*WR, and
    zeros after the last channel (the slack that the last panels read past the image).

    Each padded row of WP columns is stored as WR = SW*WE floats, its columns split by phase for a
    stride SW (1 or 2): column w lies at (w % SW)*WE + w // SW (WE = ceil(WP / SW)).  With SW = 1 that is the row
    as it is; with SW = 2 the even columns come first, then the odd ones, so the inputs that SW-apart
    outputs read at one tap are consecutive floats."""
    C, H, W = xn.shape
    HP = H + 2 * PH
    WR = SW * WE
    zero = xf.dtype.type(0)
    for k in range(xf.shape[0]):
        xf[k] = zero
    xnf = xn.reshape(-1)  # unsigned flat offsets: no slice per row, no wraparound test per value
    if SW == 1:
        for c in range(C):
            for h in range(H):
                d = np.uint64(c * HP * WR + (h + PH) * WR + PW)
                s = np.uint64((c * H + h) * W)
                for w in range(W):
                    xf[d + np.uint64(w)] = xnf[s + np.uint64(w)]
        return
    # Stride 2 (the only other stride conv.py sends here): phase r holds the padded columns 2m + r.  Image
    # columns 2m and 2m + 1 are padded columns 2m + PW + e (e = 0, 1): phase (PW + e) & 1, index
    # m + (PW + e) >> 1, the same phase for every m.  So each row is read in pairs, in order, and each
    # phase written contiguously (0.36 ms for 64 of ResNet-20's 16 x 32 x 32 images, against 1.2 ms with a
    # slice per row and phase; the stride-1 copy takes 0.16).
    if SW != 2:
        raise ValueError("_pad_flat: strides 1 and 2 only (conv._use_packed sends no other)")
    uWE = np.uint64(WE)
    e0 = np.uint64(PW)
    e1 = e0 + U1
    at0, at1 = (e0 & U1) * uWE + (e0 >> U1), (e1 & U1) * uWE + (e1 >> U1)
    half = W // 2
    for c in range(C):
        for h in range(H):
            d = np.uint64(c * HP * WR + (h + PH) * WR)
            s = np.uint64((c * H + h) * W)
            d0, d1 = d + at0, d + at1
            for m in range(half):
                u = np.uint64(m)
                xf[d0 + u] = xnf[s + u + u]
                xf[d1 + u] = xnf[s + u + u + U1]
            if W % 2:  # the last column, an even one
                xf[d0 + np.uint64(half)] = xnf[s + np.uint64(W - 1)]


@njit(cache=True, fastmath=True)
def _conv_images(x, wt, bias, y, xf, offs, kofs, tmp, zeros8, n0, step, PH, PW, SH, SW, KH):
    """Images n0, n0 + step, ... of a convolution with strides (SH, SW) (see ``conv2d_packed``)."""
    N, O, OH, OW = y.shape
    H = x.shape[2]
    WE = (x.shape[3] + 2 * PW + SW - 1) // SW
    WR = SW * WE  # floats per padded row (its columns split by phase)
    per_row = offs.shape[0] // KH  # taps in one row p of the kernel: C*KW
    wtf = wt.reshape(-1)  # the weight panels, one after another (flat: no slice per tile call)
    plen = wt.shape[1]
    yf = y.reshape(-1)  # written at unsigned flat offsets: no slice, no wraparound test per value
    for n in range(n0, N, step):
        _pad_flat(x[n], xf, PH, PW, WE, SW)
        for i in range(OH):
            # Output row i reads padded rows SH*i + p; those with SH*i + p < PH or >= H + PH are all
            # zeros, so only the kernel rows p0 <= p < p1 add anything: the taps k0 <= k < k1.
            k0 = max(0, PH - SH * i) * per_row
            k1 = max(k0, min(KH, H + PH - SH * i) * per_row)
            for j0 in range(0, OW, MR):
                for jb in range(wt.shape[0]):
                    # tmp[u, v] = sum_{k0 <= k < k1} xf[offs[k] + SH*i*WR + j0 + u] * w2[32*jb + v, k]
                    tile8x32(xf, offs, SH * i * WR + j0, wtf, kofs, jb * plen, k0, k1 - k0, zeros8, ZERO, tmp, ZERO,
                             ZERO, YES)
                    for v in range(min(NR, O - NR * jb)):  # write the 8 x 32 block out, channels first
                        o = NR * jb + v
                        bo = bias[o]
                        at = np.uint64(((n * O + o) * OH + i) * OW + j0)
                        for u in range(min(MR, OW - j0)):
                            yf[at + np.uint64(u)] = tmp[u, v] + bo


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_packed(x, wt, bias, y, PH, PW, offs, xf_ws, SH, SW, KH):
    """y (N, O, OH, OW) = stride-1 convolution of x (N, C, H, W) (eq. (K1)); grad-input is this with the
    flipped kernel (K6).  Weights packed by ``pack_panels(w2, 32, order)`` into panels of 32 output channels.

    The tile takes 8 neighbouring output positions of one output row as its rows and 32 output
    channels as its columns, k running over the taps (p, c, q), kernel row first (``conv._row_first_taps``
    orders the weights' columns and offs so).  Pad the image and flatten it, xf[c*HP*WP + h*WP + w];
    output (i, j) is then s = i*WP + j, and tap (p, c, q) reads xf[offs[k] + s], offs[k] = c*HP*WP +
    p*WP + q (moving p rows down and q columns right is adding p*WP + q).  So the A panel (the 8 inputs
    that tap k sees) is xf[offs[k] + s0 ... + 7], read in place: nothing is copied but the weights (once
    per call).  Output row i skips the kernel rows p that read only padding rows, one run of k at each
    end.  A row of fewer than 8 outputs left computes a few columns past the image (the slack after it)
    that are not written out.

    Strides (SH, SW): output (i, j) reads padded row SH*i + p and column SW*j + q.  The padded rows are
    stored with their columns split by phase (``_pad_flat``), so tap (p, c, q) of 8 neighbouring outputs
    is again 8 consecutive floats, at offs[k] + SH*i*WR + j0 with offs[k] = c*HP*WR + p*WR +
    (q % SW)*WE + q // SW (WE = ceil(WP / SW), WR = SW*WE; for stride 1, WR = WP and this is the layout
    above).  KH: the kernel's height.

    Parallel over images: worker t of T = len(xf_ws) takes images t, t + T, ... with its own padded
    image xf_ws[t], and writes only its own images.
    """
    T = xf_ws.shape[0]
    kofs = np.arange(offs.shape[0]) * NR  # row r of a weight panel starts at 32*r
    for t in prange(T):
        tmp = np.empty((MR, NR), dtype=y.dtype)
        _conv_images(x, wt, bias, y, xf_ws[t], offs, kofs, tmp, np.zeros(MR, dtype=y.dtype), np.int64(t), T, PH, PW,
                     SH, SW, KH)


@njit(cache=True, fastmath=True)
def conv2d_packed_serial(x, wt, bias, y, PH, PW, offs, xf_ws, SH, SW, KH):
    """``conv2d_packed`` on the calling thread alone (small batches)."""
    kofs = np.arange(offs.shape[0]) * NR
    tmp = np.empty((MR, NR), dtype=y.dtype)
    _conv_images(x, wt, bias, y, xf_ws[0], offs, kofs, tmp, np.zeros(MR, dtype=y.dtype), ZERO, ONE, PH, PW, SH, SW, KH)


# --- convolution with few output channels (stride 1): channels as the tile's rows ----------------------
#
# For fewer than 32 output channels, or short sums, the tile is turned around: its 8 rows are 8
# output channels and its 32 columns 32 consecutive outputs of the "wide" grid s = i*WP + j (OH rows
# of WP columns; the columns j >= OW straddle two image rows and are thrown away, as in conv_direct.py).
# Tap r of those 32 outputs reads xf[offs[r] + s0 ... + 31], 32 consecutive floats of the padded,
# flattened image: the B panel is read in place, and the A panel is the weights, packed once per call
# into blocks of 8 output channels.


@njit(cache=True, fastmath=True)
def _conv_rows_images(x, wr, bias8, y, xf, yw, offs, aoffs, n0, step, PH, PW):
    """Images n0, n0 + step, ... of a stride-1 convolution (see ``conv2d_rows``)."""
    N, O, OH, OW = y.shape
    H = x.shape[2]
    WP = x.shape[3] + 2 * PW
    KH = H + 2 * PH - OH + 1  # stride 1
    per_row = offs.shape[0] // KH  # taps in one row p of the kernel: C*KW
    L = OH * WP  # outputs on the wide grid
    wrf = wr.reshape(-1)  # the weight panels, one after another (flat: no slice per tile call)
    plen = wr.shape[1]
    yf, ywf = y.reshape(-1), yw.reshape(-1)  # copied at unsigned flat offsets: no slices
    for n in range(n0, N, step):
        _pad_flat(x[n], xf, PH, PW, WP, ONE)
        for s0 in range(0, L, NR):
            # These 32 outputs lie on output rows i0 ... i1; kernel row p adds something to one of
            # them only if some i + p is a row of the image, PH <= i + p < H + PH: taps k0 <= k < k1.
            i0, i1 = s0 // WP, min(OH - 1, (s0 + NR - 1) // WP)
            k0 = max(0, PH - i1) * per_row
            k1 = max(k0, min(KH, H + PH - i0) * per_row)
            for ib in range(wr.shape[0]):
                # yw[8*ib + i, s0 + j] = bias[8*ib + i] + sum_k w2[8*ib + i, k] * xf[offs[k] + s0 + j]
                tile8x32(wrf, aoffs, ib * plen, xf, offs, s0, k0, k1 - k0, bias8, ib * MR, yw, ib * MR, s0, YES)
        for o in range(O):  # keep the columns j < OW of each wide row
            for i in range(OH):
                src = np.uint64(o * yw.shape[1] + i * WP)
                dst = np.uint64(((n * O + o) * OH + i) * OW)
                for j in range(OW):
                    yf[dst + np.uint64(j)] = ywf[src + np.uint64(j)]


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_rows(x, wr, bias8, y, PH, PW, offs, xf_ws, yw_ws):
    """y (N, O, OH, OW) = stride-1 convolution of x (N, C, H, W) (eq. (K1)), for few output channels;
    grad-input is this with the flipped kernel (K6).  Weights packed by ``pack_panels(w2, 8, order)``; bias8 is
    the bias padded with zeros to whole blocks of 8.

    The tile's rows are 8 output channels, its columns 32 outputs of the wide grid, k running over
    the taps (p, c, q), kernel row first (``conv._row_first_taps``), with offs[k] = c*HP*WP + p*WP + q;
    each block of 32 outputs leaves out the kernel rows that read only padding rows for all of them.  Workspaces per worker t: xf_ws[t], the
    padded image with at least KW + 32 floats of slack after it, and yw_ws[t], the wide output
    (8 * blocks, OH*WP rounded up to 32).

    Parallel over images: worker t of T = len(xf_ws) takes images t, t + T, ... and writes only its own
    images.
    """
    T = xf_ws.shape[0]
    aoffs = np.arange(offs.shape[0]) * MR  # column r of a weight panel starts at 8*r
    for t in prange(T):
        _conv_rows_images(x, wr, bias8, y, xf_ws[t], yw_ws[t], offs, aoffs, np.int64(t), T, PH, PW)


@njit(cache=True, fastmath=True)
def conv2d_rows_serial(x, wr, bias8, y, PH, PW, offs, xf_ws, yw_ws):
    """``conv2d_rows`` on the calling thread alone (small batches)."""
    aoffs = np.arange(offs.shape[0]) * MR
    _conv_rows_images(x, wr, bias8, y, xf_ws[0], yw_ws[0], offs, aoffs, ZERO, ONE, PH, PW)


# --- convolution, grad-weight (stride 1) -------------------------------------------------------------
#
# dL/dw[o, c, p, q] = sum_n sum_{i,j} dL/dy[n,o,i,j] * xpad[n, c, i+p, j+q]                   (K4)
#
# Lay each padded image out channels-last, xh[n, (h*WP + w)*C + c].  For a fixed tap row p and
# output position (i, j), the KW*C values xpad[n, c, i+p, j+q] for q < KW, c < C are then the KW*C
# consecutive floats of xh[n] from ((i+p)*WP + j)*C, in the order s = q*C + c.  So, with
# dWt[p, s, o] = dL/dw[o, c, p, q]:
#
#     dWt[p, s, o] = sum_n sum_{(i,j)} xh[n, ((i+p)*WP + j)*C + s] * dL/dy[n, o, i, j],
#
# a product with k = (n, i, j) running over every output position of every image, A = the runs of xh
# (8 values of s per position: 8 consecutive floats, read in place) and B = dL/dy transposed,
# (positions, O), laid out once for all the tasks so that k runs on through the images:
# gb[ob, k*32 + j] = dL/dy[n, 32*ob + j, i, j'] for k = n*P + i*OW + j'.
#
# Skipping the padding.  Where i + p or j + q falls in the zero border, xh holds zeros and the
# product adds nothing, so each block of 8 rows of dWt sums only over the positions that read real
# pixels for its (p, q): output rows i with PH <= i + p < H + PH and columns j with PW <= j + q < W + PW
# (28% of the products of the CIFAR-10 net's conv3, 8 x 8 outputs padded by 2, are such zeros).  The
# tile takes its k-th column and row from lists of offsets (aoffs, boffs), so the positions to visit
# are listed once per (p, q) for a group of images (``cpu._grad_weight_lists``), image-relative: the
# group starting at image n0 adds n0 to both.  A block whose 8 rows s = q*C + c straddle two values of
# q uses the list of its row p alone (every column).  One tile call covers a group of about GW_KC
# positions, several small images at a time.  dWt is cut into blocks of 8 rows (a tap row p and 8
# values of s) and each of the T tasks takes an equal run of blocks: it owns those rows of dWt, reads
# each group's part of B once for all of them, sums over k in order and shares no sum with another task.

GW_KC = 1024  # output positions (across images) per group: a group's 1024 x 32 part of a B panel is
# 128 KiB, read from L2; longer calls spread the tile's fixed cost (about 5% faster than 256 here)


@njit(cache=True)
def _channels_last(x, gy, xh, gb, n, PH, PW):
    """xh[n] = x[n] padded and channels-last, flat ((h*WP + w)*C + c), zeros after the image;
    gb[ob, (n*P + pos)*width + j] = gy[n, width*ob + j, pos] (zeros past O), width = 32 for the panels of
    ``conv2d_packed_grad_weight`` and 8 for those of ``conv2d_rows_grad_weight``.

    Both copies read and write through flat views at unsigned offsets (no slice per row, no
    wraparound test per value): measured on ResNet-20's 16-channel layers, this halves their time,
    which was a quarter of the whole grad-weight."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    WP = W + 2 * PW
    O = gy.shape[1]
    P = gy.shape[2] * gy.shape[3]
    zero = xh.dtype.type(0)
    dst = xh[n]
    for k in range(dst.shape[0]):
        dst[k] = zero
    xf = x.reshape(-1)
    for h in range(H):
        for c in range(C):
            s = np.uint64(((n * C + c) * H + h) * W)
            d = np.uint64(((h + PH) * WP + PW) * C + c)
            for w in range(W):
                dst[d + np.uint64(w * C)] = xf[s + np.uint64(w)]
    width = gb.shape[1] // (x.shape[0] * P)
    gf, gbf = gy.reshape(-1), gb.reshape(-1)
    for ob in range(gb.shape[0]):
        base = np.uint64(ob * gb.shape[1] + n * P * width)
        for j in range(width):
            o = ob * width + j
            if o < O:
                src = np.uint64((n * O + o) * P)
                for pos in range(P):
                    gbf[base + np.uint64(pos * width + j)] = gf[src + np.uint64(pos)]
            else:
                for pos in range(P):
                    gbf[base + np.uint64(pos * width + j)] = zero


@njit(cache=True, fastmath=True)
def _grad_weight_task(xf, gb, dWt, b0, b1, nsb, row_at, L, P, lists, ka, kb, counts, zeros8):
    """Blocks b0 ... b1 - 1 of dWt, block b being rows s = 8*(b % nsb) ... + 7 of tap row p = b // nsb,
    each summed over its positions in order, one group of images at a time.

    Block b visits the positions of list g = lists[b]: for a group of images starting at n0, the k-th
    is at xf[n0*L + ka[g, k] + p*row_at + 8*sb ...] in the images (ka[g, k] = u*L + (i*WP + j)*C for
    image n0 + u, position (i, j); row_at = WP*C, one padded row further down) and at
    gb[ob, n0*P*32 + kb[g, k] ...] in B (kb[g, k] = (u*P + i*OW + j)*32); counts[g] positions per
    image.  A group's part of B is read from memory once and then used by every block of the task,
    from cache."""
    N = gb.shape[1] // (P * NR)
    group = ka.shape[1] // P  # images per group
    # Flat views, made once: the tile takes whole arrays and offsets (no slice per call)
    kaf, kbf, gbf = ka.reshape(-1), kb.reshape(-1), gb.reshape(-1)
    dWf = dWt.reshape(dWt.shape[0] * dWt.shape[1], dWt.shape[2])
    SP = dWt.shape[1]
    for n0 in range(0, N, group):
        m = min(group, N - n0)
        for ob in range(gb.shape[0]):
            for b in range(b0, b1):
                p = b // nsb
                sb = b % nsb
                g = lists[b]
                tile8x32(xf, kaf, n0 * L + p * row_at + sb * MR, gbf, kbf, ob * gb.shape[1] + n0 * P * NR,
                         g * ka.shape[1], m * counts[g], zeros8, ZERO, dWf, p * SP + sb * MR, ob * NR, n0 == 0)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_packed_grad_weight(x, gy, dWt, xh, gb, PH, PW, T, lists, ka, kb, counts):
    """dWt (KH, SP, OP): dWt[p, q*C + c, o] = dL/dw[o, c, p, q] for a stride-1 convolution (eq. (K4));
    SP = KW*C rounded up to 8 and OP = O rounded up to 32 (the extra rows and columns are scratch).

    xh (N, L) and gb (OP/32, N*P*32) are workspaces; (lists, ka, kb, counts) list the positions that
    each block of 8 rows visits (``cpu._grad_weight_lists``).  Two parallel passes: lay out every image
    (prange over images), then prange over T tasks, each an equal run of the KH * SP/8 blocks of 8 rows
    of dWt (T: the thread count).  No sum is split between tasks, so the result does not depend on T.
    """
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    KH, SP = dWt.shape[0], dWt.shape[1]
    for n in prange(N):
        _channels_last(x, gy, xh, gb, np.int64(n), PH, PW)
    zeros8 = np.zeros(MR, dtype=dWt.dtype)
    xf = xh.reshape(xh.size)
    nsb = SP // MR
    blocks = KH * nsb
    tasks = min(T, blocks)
    P = gy.shape[2] * gy.shape[3]
    for t in prange(tasks):
        u = np.int64(t)
        _grad_weight_task(xf, gb, dWt, u * blocks // tasks, (u + 1) * blocks // tasks, nsb, WP * C, xh.shape[1],
                          P, lists, ka, kb, counts, zeros8)


@njit(cache=True, fastmath=True)
def conv2d_packed_grad_weight_serial(x, gy, dWt, xh, gb, PH, PW, lists, ka, kb, counts):
    """``conv2d_packed_grad_weight`` on the calling thread alone (small batches): the same sums."""
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    KH, SP = dWt.shape[0], dWt.shape[1]
    for n in range(N):
        _channels_last(x, gy, xh, gb, n, PH, PW)
    zeros8 = np.zeros(MR, dtype=dWt.dtype)
    xf = xh.reshape(xh.size)
    nsb = SP // MR
    _grad_weight_task(xf, gb, dWt, ZERO, KH * nsb, nsb, WP * C, xh.shape[1], gy.shape[2] * gy.shape[3], lists, ka,
                      kb, counts, zeros8)


# --- convolution grad-weight with few output channels (stride 1): the tile turned around -------------
#
# With fewer than 32 output channels, panels of 32 channels would be mostly zeros, so the tile is
# turned around as in conv2d_rows: its 8 rows are 8 output channels, its 32 columns 32 values of
# s = q*C + c of one tap row p, and k runs over the output positions again,
#
#     dWr[p, o, s] = sum_n sum_{(i,j)} dL/dy[n, o, i, j] * xh[n, ((i+p)*WP + j)*C + s],
#
# A = dL/dy transposed in panels of 8 channels, g8[ob, k*8 + i] (8 consecutive floats per position),
# and B = the channels-last images read in place (32 consecutive floats per position; where KW*C is
# not a whole number of 32, the last columns read past the tap row and land in scratch columns of dWr).
# Each block (p, ob, sj) of dWr visits the positions of tap row p that read real pixels (list KH*KW + p
# of ``cpu._grad_weight_lists``), one group of images at a time.  For LeNet-5's conv2 (6 -> 16
# channels, KW*C = 30) this wastes 2 of 32 columns, where 32-channel panels would waste half.


@njit(cache=True, fastmath=True)
def _grad_weight_rows_task(xf, g8, dWr, b0, b1, row_at, L, P, ka, kb, counts, zeros8, S):
    """Blocks b0 ... b1 - 1 of dWr (KH, O8, SP), block b = (p, ob, sj) in that order: rows 8*ob ... + 7
    and columns 32*sj ... + 31 of dWr[p], summed over the positions of tap row p in order.

    ka[p, k] = u*L + (i*WP + j)*C (where image u of a group has position (i, j) in xf) and
    kb[p, k] = (u*P + i*OW + j)*8 (where that position's 8 channels start in a panel of g8); counts[p]
    positions per image.  A last block of columns with at most 16 of the S = KW*C real ones takes the half
    tile (``tile8x16``): with 16 channels and a 3 x 3 kernel (S = 48) the full tile would compute a third
    more than there is."""
    N = g8.shape[1] // (P * MR)
    group = ka.shape[1] // P
    nob, nsj = dWr.shape[1] // MR, dWr.shape[2] // NR
    # Flat views, made once: the tile takes whole arrays and offsets (no slice per call)
    kaf, kbf, g8f = ka.reshape(-1), kb.reshape(-1), g8.reshape(-1)
    dWf = dWr.reshape(dWr.shape[0] * dWr.shape[1], dWr.shape[2])
    O8 = dWr.shape[1]
    for n0 in range(0, N, group):
        m = min(group, N - n0)
        for b in range(b0, b1):
            p = b // (nob * nsj)
            ob = (b // nsj) % nob
            sj = b % nsj
            a_at = ob * g8.shape[1] + n0 * P * MR
            b_at = n0 * L + p * row_at + sj * NR
            if S - sj * NR <= 16:
                tile8x16(g8f, kbf, a_at, xf, kaf, b_at, p * ka.shape[1], m * counts[p], dWf, p * O8 + ob * MR, sj * NR,
                         n0 == 0)
            else:
                tile8x32(g8f, kbf, a_at, xf, kaf, b_at, p * ka.shape[1], m * counts[p], zeros8, ZERO, dWf,
                         p * O8 + ob * MR, sj * NR, n0 == 0)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_rows_grad_weight(x, gy, dWr, xh, g8, PH, PW, T, ka, kb, counts):
    """dWr (KH, O8, SP): dWr[p, o, q*C + c] = dL/dw[o, c, p, q] for a stride-1 convolution (eq. (K4));
    O8 = O rounded up to 8 and SP = KW*C rounded up to 32 (the extra rows and columns are scratch).

    xh (N, L) (L: at least HP*WP*C + 32) and g8 (O8/8, N*P*8) are workspaces; ka, kb, counts list the
    positions of each tap row that read real pixels (``cpu._grad_weight_row_lists``).  Two parallel
    passes, as ``conv2d_packed_grad_weight``: lay out every image, then T tasks, each an equal run of
    the blocks of dWr; no sum is split between tasks, so the result does not depend on T.
    """
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    for n in prange(N):
        _channels_last(x, gy, xh, g8, np.int64(n), PH, PW)
    zeros8 = np.zeros(MR, dtype=dWr.dtype)
    xf = xh.reshape(xh.size)
    blocks = dWr.shape[0] * (dWr.shape[1] // MR) * (dWr.shape[2] // NR)
    tasks = min(T, blocks)
    P = gy.shape[2] * gy.shape[3]
    S = (W + 2 * PW - gy.shape[3] + 1) * C  # KW*C (stride 1)
    for t in prange(tasks):
        u = np.int64(t)
        _grad_weight_rows_task(xf, g8, dWr, u * blocks // tasks, (u + 1) * blocks // tasks, WP * C, xh.shape[1], P,
                               ka, kb, counts, zeros8, S)


@njit(cache=True, fastmath=True)
def conv2d_rows_grad_weight_serial(x, gy, dWr, xh, g8, PH, PW, ka, kb, counts):
    """``conv2d_rows_grad_weight`` on the calling thread alone (small batches): the same sums."""
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    for n in range(N):
        _channels_last(x, gy, xh, g8, n, PH, PW)
    zeros8 = np.zeros(MR, dtype=dWr.dtype)
    xf = xh.reshape(xh.size)
    blocks = dWr.shape[0] * (dWr.shape[1] // MR) * (dWr.shape[2] // NR)
    _grad_weight_rows_task(xf, g8, dWr, ZERO, blocks, WP * C, xh.shape[1], gy.shape[2] * gy.shape[3], ka, kb, counts,
                           zeros8, (W + 2 * PW - gy.shape[3] + 1) * C)
