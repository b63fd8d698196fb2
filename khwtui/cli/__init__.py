"""The command line: one grammar for every command, and the commands that are not a build.
"""
