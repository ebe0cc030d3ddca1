"""What the PASCAL datasets share (VOC2011, SBD, PASCAL-Context on VOC2010): the
20 VOC classes and background, and the BGR mean of the ILSVRC-trained VGG-16 and
CaffeNet inputs, subtracted from their images."""

PASCAL_MEAN = (104.00699, 116.66877, 122.67892)

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
