"""dnastream.kernels"""
