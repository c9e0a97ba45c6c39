"""thrifty.data"""
