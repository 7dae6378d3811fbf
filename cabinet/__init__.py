"""cabinet"""
