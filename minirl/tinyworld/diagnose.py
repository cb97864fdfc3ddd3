"""What the demo's RL cannot fix, measured: the base model's relation order, its colour binding on held-out
pairs, and a reward model's colour taste.

    .venv/bin/python -m minirl.tinyworld.diagnose [MODEL]  # about a minute on 2 CPU cores

MODEL is a model folder (default: the committed base model, assets/tinyworld/model); the result is written
beside it, as diagnosis.json in MODEL's parent folder.

Relations: for every relation word, on training relation captions (demo settings: 10 DDIM steps, eta 1,
guidance 3): how often the detector finds exactly the named objects, how often the relation holds when it
does (chance is about a half for left of / right of / above / below, whose order the model must get right,
and near 1 for the symmetric "next to"), and both (success). Object errors: on training and on held-out
relation captions whose objects differ in colour and shape, how often the two shapes come out in each other's
colours (a held-out caption names a (colour, shape) pair that pretraining never showed beside another shape).
Then whether the model uses order where layouts are decided: its x_0 error at t = 980 on renders of relation
captions, given each caption and given it with the two objects swapped (the same error: order is ignored); and
the text encoder's vector of each word in "a green triangle left of a yellow circle" and in "a yellow circle
left of a green triangle" (cosine near 1: the UNet's cross-attention sees nearly the same bag of words).

Preference by colour: the learned preference model's mean score of renders of one object in each colour. The
simulated rater it imitates is colour-blind (its utility is the same for every colour), so a gap between
colours is the reward model's own taste, and it pulls against the parity reward.
"""

import argparse
import json
import random
from pathlib import Path

import torch

from minirl.tinyworld import demo, diffusion, judges, scenes
from minirl.mdp import predict_x0_eps


def relation_rates(policy, detector, split="train", captions_per_relation=8, seeds=16):
    rng = random.Random(0)
    reward = judges.CompositionReward(detector)
    rates = {}
    for relation in scenes.RELATIONS:
        captions = rng.sample([c for c in scenes.prompts("relation", split) if f" {relation} " in c],
                              captions_per_relation)
        pairs = [(c, s) for c in captions for s in range(seeds)]
        _, info = reward(demo.generate(policy, pairs), [c for c, _ in pairs], [{}] * len(pairs))
        rates[relation] = {"objects": round(info["objects"], 3), "success": round(info["success"], 3),
                           "relation_given_objects": round(info["success"] / info["objects"], 3)}
    return rates


def distinct_objects(split):
    """The split's relation captions whose two objects differ in colour and in shape."""
    return [c for c in scenes.prompts("relation", split)
            if all(len(set(v)) == 2 for v in (scenes.parse(c)["colours"], scenes.parse(c)["shapes"]))]


@torch.no_grad()
def object_errors(policy, detector, split, captions=40, seeds=8):
    """What the detector finds instead of a relation's named objects, on `captions` relation captions of the
    split whose two objects differ in colour and in shape: the share of images with exactly the named
    objects, with the two shapes drawn in each other's colours (a failure of attribute binding), and anything
    else (an object missing, a wrong colour, a third object)."""
    pairs = [(c, s) for c in random.Random(0).sample(distinct_objects(split), captions) for s in range(seeds)]
    images, prompts = demo.generate(policy, pairs), [c for c, _ in pairs]
    swapped = [scenes.describe({**labels, "colours": labels["colours"][::-1]})  # "a blue triangle ... a red circle"
               for labels in map(scenes.parse, prompts)]
    objects = judges.verdicts(detector, images, prompts)[2]
    colours_swapped = judges.verdicts(detector, images, swapped)[2]  # never with objects: the two shapes differ
    found = {"objects": objects, "colours_swapped": colours_swapped, "other": ~objects & ~colours_swapped}
    return {name: round(share.float().mean().item(), 3) for name, share in found.items()}


@torch.no_grad()
def order_use(policy, t=980, n=256):
    """Mean squared x_0 error of the model at timestep t on renders of "A <left of|right of|above|below> B"
    (two colours), given the caption and given "B <relation> A"; their ratio is 1 when order is ignored.
    A flow model's x_0 is x_sigma - sigma v at sigma = t / 1000."""
    rng, found = random.Random(0), []
    while len(found) < n:
        scene = scenes.sample_scene(rng, "relation")
        if scene.labels["relation"] != "next to" and len(set(scene.labels["colours"])) == 2:
            found.append(scene)
    x0 = torch.stack([scenes.render(s) for s in found]) * 2 - 1
    timesteps = torch.full((n,), t)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    sigma = t / policy.scheduler.config.num_train_timesteps  # a flow model's time
    x_t = (1 - sigma) * x0 + sigma * noise if policy.flow else policy.scheduler.add_noise(x0, noise, timesteps)
    errors = {}
    given = [s.caption for s in found]
    for name, captions in (("caption", given), ("swapped", [scenes.swapped(c) for c in given])):
        out = policy.unet(x_t, timesteps, encoder_hidden_states=policy.encode_prompts(captions)).sample
        x0_hat = x_t - sigma * out if policy.flow else \
            predict_x0_eps(policy.scheduler, out, x_t, policy.scheduler.alphas_cumprod[timesteps])[0]
        errors[name] = round(((x0_hat - x0) ** 2).mean().item(), 4)
    return {"t": t, "x0_error": errors, "swapped_over_caption": round(errors["swapped"] / errors["caption"], 3)}


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirl.tinyworld.diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=str(demo.ASSETS / "model"), help="a tiny-world model folder")
    model = parser.parse_args(argv).model
    policy = diffusion.load_policy(model, num_steps=10, guidance_scale=3.0)
    detector, preference = judges.load(demo.ASSETS / "judges")
    result = {"relations": relation_rates(policy, detector),
              "object_errors": {split: object_errors(policy, detector, split) for split in scenes.SPLITS},
              "order_use": order_use(policy),
              "word_position_similarity": word_position_similarity(policy),
              "preference_by_colour": preference_by_colour(preference)}
    (Path(model).parent / "diagnosis.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
