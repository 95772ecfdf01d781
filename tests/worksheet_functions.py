"""The worksheet's functions, written once as a student would with NumPy, shared by the tests."""

from __future__ import annotations

import math

import numpy as np

import chainrule as cr

#: Question 2's inputs
INPUTS = {
    "q2a": {"x": 1.0, "y": 3.0, "z": 2.0},
    "q2b": {"x": 3.0, "y": 1.0, "z": 2.0},
    "q2c": {"x": math.e, "y": math.pi / 2, "z": 2.0},
}


def q2a(x, y, z):
    return (x + y) * z


def q2b(x, y, z):
    return (x**2 + 2 * y) * z**3


def q2c(x, y, z):  # z is an input the function does not use: its gradient is 0
    return (np.log(x) + np.sin(y)) ** 2 + 4 * x


def complex_layer(x, y):  # question 4
    return np.log(x) * cr.sigmoid(np.sqrt(y)) / cr.sigmoid((x + y) ** 2)
