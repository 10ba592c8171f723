"""The embedded demo: synthetic scenes that the small `demo` model was trained on.

`scenes` holds the prompt grammar (``a {color} {shape} moving {direction} on a {background}
background``), schedule sampling and the numpy renderer; `checker` scores frames analytically
(object colour, background colour, motion direction) so a generated video can be checked
against the prompts that drove it. Both are pure numpy: no torch needed.
"""
