"""tf.data pipelines for deblurring: paired datasets, augmentation, synthetic blur, optical flow.

Entry points: :func:`paired_dataset` (GoPro, flat folders, a pair list or
prepared TFRecords), :func:`synthetic_dataset` (pairs made on the fly from sharp
photos), both configured by the shared :class:`DatasetOptions`, and
:func:`write_tfrecords` (``tfdeblur prepare-data``). Images are
RGB float32 in [0, 1], read by the package's one reader :func:`read_image`.
"""

from tfdeblur.data._pipeline import DatasetOptions
from tfdeblur.data.augment import augment_pair, random_crop
from tfdeblur.data.flow import FlowCache, bidirectional_flow, dis_flow, sequence_triplets
from tfdeblur.data.io import ImageFileError, read_image, write_image
from tfdeblur.data.paired import Pair, detect_layout, find_pairs, paired_dataset
from tfdeblur.data.synthetic import (
    BlurConfig,
    SyntheticPair,
    load_kernels,
    random_trajectory,
    synthesize_pair,
    synthetic_dataset,
    trajectory_kernel,
)
from tfdeblur.data.tfrecord import write_tfrecords

__all__ = [
    "BlurConfig",
    "DatasetOptions",
    "FlowCache",
    "ImageFileError",
    "Pair",
    "SyntheticPair",
    "augment_pair",
    "bidirectional_flow",
    "detect_layout",
    "dis_flow",
    "find_pairs",
    "load_kernels",
    "paired_dataset",
    "random_crop",
    "random_trajectory",
    "read_image",
    "sequence_triplets",
    "synthesize_pair",
    "synthetic_dataset",
    "trajectory_kernel",
    "write_image",
    "write_tfrecords",
]
