"""Reference answers to the course's coding exercises, for teachers. Students: do not open this package
before you have tried the exercise yourself; the checker in the notebook tells you when your answer is right.

One module a notebook (01_tiny_world -> `tiny_world`, 02_denoising_mdp -> `mdp`, ...), each function named as
the notebook's stub without the `my_` prefix; the tests (tests/test_exercises_*.py) check that every checker
passes on these answers.
"""
