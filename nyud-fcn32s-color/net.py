#!/usr/bin/env python3
"""Regenerate this directory's files from fcn/zoo.py and fcn/builder.py (python nets.py nyud-fcn32s-color)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fcn import generate; sys.exit(generate.regenerate(["nyud-fcn32s-color"]))
