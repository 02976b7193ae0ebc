"""dnastream.models"""
