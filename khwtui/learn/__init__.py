"""The hard way, made visible: each stage explained with this cluster's own values, and the build
exported as plain bash scripts to run by hand.

lessons (the prose) + steps (the commands a stage runs) + files (the render bundle, per stage and
node) -> explain (one Explanation per stage) -> markdown (terminal and Markdown text) and script
(the bash script set). Nothing here imports textual or rich.
"""
