"""Paired augmentation: one random transform applied identically to every image of a pair.

All functions take unbatched ``[H, W, C]`` tensors and an explicit stateless
seed (a ``[2]`` integer tensor), so a pipeline that draws the seeds from a
seeded ``tf.data.Dataset.random`` is deterministic however its maps are
parallelised. Optical flows are ``[H, W, 2k]`` tensors holding k (dx, dy)
fields in pixels (x to the right, y down); geometric transforms move their
samples like image pixels and also rotate / mirror the vectors.
"""

from __future__ import annotations

import tensorflow as tf

from tfdeblur import _validation as checks

# The six orders of the RGB channels. A Python list, not a tf.constant: importing the
# package must not start TensorFlow's runtime (a MultiWorkerMirroredStrategy can only be
# created before that).
_RGB_PERMUTATIONS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]


def _seeds(seed, n: int) -> tf.Tensor:
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return tf.random.experimental.stateless_split(seed, num=n)


def _size(patch_size) -> tuple[int, int]:
    return checks.standardize_tuple(patch_size, 2, "patch_size")


def random_crop(images, patch_size, seed):
    """Crops the same uniformly placed ``patch_size`` window out of each ``[H, W, C]`` image.

    Args:
        images: one tensor or a list of tensors of one spatial size.
        patch_size: int or (height, width).
        seed: ``[2]`` integer stateless seed.

    Returns:
        The crop(s), in the form given.

    Raises:
        InvalidArgumentError: at run time when the images are smaller than the
            patch or differ in size.
    """
    ph, pw = _size(patch_size)
    single = not isinstance(images, (list, tuple))
    images = [tf.convert_to_tensor(x) for x in ([images] if single else images)]
    shape = tf.shape(images[0])
    h, w = shape[0], shape[1]
    checks = [tf.debugging.assert_greater_equal(
        tf.stack([h, w]), tf.constant([ph, pw]),
        message=f"random_crop: image is smaller than patch_size ({ph}, {pw})")]
    checks += [tf.debugging.assert_equal(tf.shape(x)[:2], shape[:2],
                                         message="random_crop: images differ in size")
               for x in images[1:]]
    with tf.control_dependencies(checks):
        s = _seeds(seed, 2)
        top = tf.random.stateless_uniform([], s[0], 0, h - ph + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], s[1], 0, w - pw + 1, dtype=tf.int32)
    out = [tf.ensure_shape(x[top:top + ph, left:left + pw], [ph, pw, x.shape[-1]])
           for x in images]
    return out[0] if single else out


def _transform_flow(flow: tf.Tensor, transpose, hflip, vflip) -> tf.Tensor:
    """Rotates / mirrors the (dx, dy) vectors the way the pixel grid was transformed."""
    c = flow.shape[-1]
    if c is None or c % 2:
        raise ValueError(f"flow must have an even, static number of channels (dx, dy pairs), "
                         f"got shape {flow.shape}")
    f = tf.reshape(flow, tf.concat([tf.shape(flow)[:-1], [c // 2, 2]], 0))
    f = tf.cond(transpose, lambda: tf.reverse(f, [-1]), lambda: f)
    sign = tf.stack([tf.where(hflip, -1.0, 1.0), tf.where(vflip, -1.0, 1.0)])
    f = f * tf.cast(sign, f.dtype)
    return tf.reshape(f, tf.shape(flow))


def random_dihedral(images: list[tf.Tensor], seed, *, flip: bool = True, rotate: bool = True,
                    flows: list[tf.Tensor] | None = None):
    """Applies one random element of the square's symmetry group to all ``images`` and ``flows``.

    The transform is an optional transpose (when ``rotate``) followed by
    optional horizontal and vertical flips (when ``flip``), each with
    probability 1/2: with both enabled that is the 8 flips and 90-degree
    rotations, uniformly. A transpose swaps height and width.

    Args:
        images: ``[H, W, C]`` tensors of one spatial size.
        seed: ``[2]`` integer stateless seed.
        flip: allow horizontal / vertical flips.
        rotate: allow the transpose (the 90- and 270-degree rotations).
        flows: ``[H, W, 2k]`` flow tensors to transform alongside.

    Returns:
        ``(images, flows)`` transformed lists.
    """
    images = [tf.convert_to_tensor(x) for x in images]
    flows = [tf.convert_to_tensor(f) for f in (flows or [])]
    s = _seeds(seed, 3)
    coin = lambda k: tf.random.stateless_uniform([], s[k]) < 0.5
    transpose = tf.logical_and(tf.constant(rotate), coin(0))
    hflip = tf.logical_and(tf.constant(flip), coin(1))
    vflip = tf.logical_and(tf.constant(flip), coin(2))

    def grid(x):
        x = tf.cond(transpose, lambda: tf.transpose(x, [1, 0, 2]), lambda: x)
        x = tf.cond(hflip, lambda: tf.reverse(x, [1]), lambda: x)
        x = tf.cond(vflip, lambda: tf.reverse(x, [0]), lambda: x)
        return x

    images = [grid(x) for x in images]
    flows = [_transform_flow(grid(f), transpose, hflip, vflip) for f in flows]
    return images, flows


def random_rgb_permutation(images: list[tf.Tensor], seed) -> list[tf.Tensor]:
    """Reorders the three channels of every image the same random way (6 orders, uniform)."""
    k = tf.random.stateless_uniform([], _seeds(seed, 1)[0], 0, 6, dtype=tf.int32)
    perm = tf.gather(tf.constant(_RGB_PERMUTATIONS, tf.int32), k)
    return [tf.gather(x, perm, axis=-1) for x in images]


def augment_pair(blurry: tf.Tensor, sharp: tf.Tensor, seed, *, flow: tf.Tensor | None = None,
                 patch_size=None, flip: bool = True, rotate: bool = True,
                 permute_channels: bool = True):
    """Random crop, flips, 90-degree rotations and RGB permutation, identical for the pair.

    The transforms of SVDN's training (Yuan et al. CVPR 2020, sec. 4.1) and
    SVRNN's (Zhang et al. CVPR 2018, sec. 3.3, without resizing). Flows get the
    same crop and geometric transform, with their vectors rotated / mirrored;
    the channel permutation does not touch them.

    Args:
        blurry, sharp: ``[H, W, 3]`` float tensors of one size.
        seed: ``[2]`` integer stateless seed; equal seeds give equal results.
        flow: optional ``[H, W, 2k]`` flow tensor.
        patch_size: crop size, int or (height, width); ``None`` keeps the
            whole image.
        flip, rotate, permute_channels: enable each transform.

    Returns:
        ``(blurry, sharp)``, or ``(blurry, sharp, flow)`` when a flow is given.

    Example:
        >>> b, s = augment_pair(blurry, sharp, seed=[1, 2], patch_size=256)
    """
    s = _seeds(seed, 3)
    parts = [blurry, sharp] + ([flow] if flow is not None else [])
    parts = [tf.convert_to_tensor(x) for x in parts]
    if patch_size is not None:
        parts = random_crop(parts, patch_size, s[0])
    images, flows = random_dihedral(parts[:2], s[1], flip=flip, rotate=rotate, flows=parts[2:])
    if permute_channels:
        images = random_rgb_permutation(images, s[2])
    return tuple(images + flows)
