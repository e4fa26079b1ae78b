"""oppscore"""
