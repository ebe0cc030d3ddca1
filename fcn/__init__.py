"""The library of the FCN reference reproduction: everything the commands at the
repository's root (solve.py of each model, score.py, infer.py, prepare.py, ...) are
made of. Importing it sets up Caffe's logging once, before Caffe loads: glog reads
GLOG_minloglevel when _caffe.so is loaded, and only warnings and errors are wanted
(INFO and WARNING lines stay off unless the environment asks for them)."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")
