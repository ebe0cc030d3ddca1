#!/usr/bin/env python3
"""Train this model (python pascalcontext-fcn32s/solve.py --help): fcn/train.py."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fcn import train; sys.exit(train.main(os.path.dirname(os.path.abspath(__file__))))
