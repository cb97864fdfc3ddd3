"""The tiny world: a synthetic text-to-image world small enough to train RL on a laptop CPU in minutes.

    scenes      16 px scenes of coloured circles, squares and triangles, their caption grammar, the colour bias
    diffusion   the base model (Stable Diffusion's parts at 16 px): build, load_policy, pretrain
    judges      its learned reward models: a detector (composition, parity's colour) and a preference model
    demo        the main job, `minirl demo`: Algorithm 1 with three tasks and L_pre, evaluated before and after

and research probes, each a command (`python -m minirl.tinyworld.<probe>`; its docstring says how), that measure what RL can and
cannot change here: `diagnose` (relation order, colour binding), `decided` (which denoising step decides a
layout), `relation_rl` (composition RL variants and the coin-flip control), `card` (the base model's card).
"""
