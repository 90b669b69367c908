"""Calibration of a rig: cameras (ChArUco), stream latencies (slates), audio levels."""
