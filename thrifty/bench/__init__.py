"""thrifty.bench"""
