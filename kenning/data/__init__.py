"""Reading labelled image collections and turning images into tensors."""

from kenning.data.images import ImageDataset, load_image
from kenning.data.readers import UNLABELLED, read_dataset, select_split

__all__ = ["UNLABELLED", "ImageDataset", "load_image", "read_dataset", "select_split"]
