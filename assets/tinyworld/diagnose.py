"""What the demo's RL cannot fix, measured: the base model's relation order and a reward model's colour taste.

    .venv/bin/python assets/tinyworld/diagnose.py   # under a minute on 2 CPU cores; writes diagnosis.json

Relations: for every relation word, on training relation captions (demo settings: 10 DDIM steps, eta 1,
guidance 3): how often the detector finds exactly the named objects, and how often the relation holds when it
does (chance is about a half for left of / right of / above / below, whose order the model must get right,
and near 1 for the symmetric "next to"). Then the cause: the text encoder's vector for a word hardly depends
on where the word stands, so "a green triangle left of a yellow circle" and "a yellow circle left of a green
triangle" reach the UNet's cross-attention as nearly the same bag of words.

Preference by colour: the learned preference model's mean score of renders of one object in each colour. The
simulated rater it imitates is colour-blind (its utility is the same for every colour), so a gap between
colours is the reward model's own taste, and it pulls against the parity reward.
"""

import json
import random
from pathlib import Path

import torch

from minirl import demo, judges, scenes, tinyworld

HERE = Path(__file__).parent


def relation_rates(policy, detector, captions_per_relation=8, seeds=16):
    rng = random.Random(0)
    reward = judges.CompositionReward(detector)
    rates = {}
    for relation in scenes.RELATIONS:
        captions = rng.sample([c for c in scenes.prompts("relation") if f" {relation} " in c], captions_per_relation)
        pairs = [(c, s) for c in captions for s in range(seeds)]
        _, info = reward(demo.generate(policy, pairs), [c for c, _ in pairs], [{}] * len(pairs))
        rates[relation] = {"objects": round(info["objects"], 3),
                           "relation_given_objects": round(info["success"] / info["objects"], 3)}
    return rates


@torch.no_grad()
def word_position_similarity(policy, first="a green triangle", second="a yellow circle", relation="left of"):
    """Cosine similarity of each word's encoder output in "A rel B" and in "B rel A" (1: order is lost)."""
    ab, ba = f"{first} {relation} {second}", f"{second} {relation} {first}"
    e_ab, e_ba = policy.encode_prompts([ab, ba])
    words_ab, words_ba = ["[BOS]", *ab.split()], ["[BOS]", *ba.split()]
    return {w: round(torch.cosine_similarity(e_ab[words_ab.index(w)], e_ba[words_ba.index(w)], dim=0).item(), 3)
            for w in (*first.split()[1:], *second.split()[1:])}


@torch.no_grad()
def preference_by_colour(preference, renders=64):
    """{shape: {colour: mean preference score, rater's mean utility}} over renders of "a <colour> <shape>"."""
    out = {}
    for shape in scenes.SHAPES:
        out[shape] = {}
        for colour in scenes.COLOURS:
            caption = f"a {colour} {shape}"
            images = torch.stack([scenes.render(scenes.scene_for(caption, random.Random(i))) for i in range(renders)])
            out[shape][colour] = {"preference": round(preference(images).mean().item(), 2),
                                  "rater": round(judges.rater_utility(images).mean().item(), 3)}
    return out


def main():
    policy = tinyworld.load_policy(demo.ASSETS / "model", num_steps=10, guidance_scale=3.0)
    detector, preference = judges.load(demo.ASSETS / "judges")
    result = {"relations": relation_rates(policy, detector),
              "word_position_similarity": word_position_similarity(policy),
              "preference_by_colour": preference_by_colour(preference)}
    (HERE / "diagnosis.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
