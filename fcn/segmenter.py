"""A model of the zoo ready to segment RGB images: its deploy net with weights,
reshaped only when the input size changes, each image checked against the memory
its forward pass needs before any pixel is decoded; and the zoo's rule for a
model's default weights. infer.py, reference.py and make demo segment with it."""
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from fcn import caffemodel, images, memory
from fcn.builder import MODALITIES
from fcn.datasets import DATASETS
from fcn.errors import UserError


class Segmenter:
    """A deploy net with weights, reshaped only when the input size changes."""

    def __init__(self, model, weights, device=None):
        self.model = model
        self.inputs = [name for name, _ in MODALITIES[model.modality]]
        if model.modality != "color":
            raise UserError(f"{model.name} reads {model.modality} input, not an RGB image; "
                                "the models that read RGB images take images here")
        caffemodel.read_shapes(weights)
        path = model.dir / "deploy.prototxt"
        self.proto = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
        self.net = caffemodel.load_net(path, weights)
        self.device = device
        self.estimate = memory.memory_model(self.net, self.proto, self.inputs,
                                     gpu=device is not None and device.is_gpu)
        self.shape = None
        self.reshapes = 0
        self.mean = DATASETS[model.eval.dataset].mean

    def check(self, h, w, path):
        return memory.check_fits_memory(self.estimate, h, w, path, self.model.name, self.device)

    def load(self, path):
        """HxWx3 RGB of the image at ``path``, refused from its header alone (before
        any pixel is decoded) when its forward pass would not fit in memory."""
        im = images.open_image(path)
        w, h = im.size
        if images.orientation(im) in (5, 6, 7, 8):      # EXIF says: rotated by 90 degrees
            w, h = h, w
        self.check(h, w, path)
        return images.photo_rgb(im, path)

    def __call__(self, rgb):
        """HxWx3 RGB -> {score blob: HxW class indices}."""
        x = images.preprocess(rgb, self.mean)
        if self.shape != x.shape:
            self.net.blobs["data"].reshape(1, *x.shape)
            self.net.reshape()
            self.shape = x.shape
            self.reshapes += 1
        self.net.blobs["data"].data[0] = x
        self.net.forward()
        return {f"score{h.suffix}": self.net.blobs[f"score{h.suffix}"].data[0].argmax(axis=0)
                .astype(np.uint8) for h in self.model.heads}


def default_weights(model):
    """The model's weights by the zoo's rule (zoo.Model.trained_weights), or one line
    saying how to get them."""
    found = model.weights()
    if found:
        return found
    released = model.released_weights
    if released:
        raise UserError(f"no weights for {model.name}: get the released ones with 'python "
                            f"prepare.py get weights {model.name}' (or pass --weights)")
    raise UserError(f"no weights for {model.name}: none are released; train it "
                        f"(python {model.name}/solve.py) or pass --weights")
