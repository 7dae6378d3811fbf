"""The simulated world's side of vision: the shelf renderer and the simulated shelf camera.

Nothing that reads images (vision.diff, vision.calibration, vision.recognizer, cabinet.reconcile)
may import from here: tests/test_walls.py walks the import graph and fails if one does. The
simulator may use the reader's public types; the reader never learns how the simulator draws.
"""
