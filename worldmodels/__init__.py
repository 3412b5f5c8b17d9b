"""worldmodels"""
