"""The planted worlds of `dupn synth --world NAME`; this package imports only numpy, pyarrow and pipeline.rawlogs.

- taobao: today's generator (pipeline/rawlogs/synth_world.py, documented in synth.py): behaviour
  match by type, scene and age, satiation, drifting interests, price, position; ~10 % clicked.
- interests: fixed category interests and history category counts; item identity matters
  little; ~20 % clicked (interests.py).
- properties: type and age of recent behaviours in the candidate's category decide; the blind
  oracle trails by ~0.05 AUC; ~15 % clicked (properties.py).
- revisits: item and shop revisits, popularity with a long tail; ~9 % clicked (revisits.py).
- price: purchasing power shapes the price of what is clicked and bought; ~30 % clicked
  (price.py).
- mixed: a blend of the four above; ~6 % clicked (mixed.py).

Every world is a World subclass: catalogue, users, behaviours, talents (follows), shops
(shop_prefs) and purchasing power are built as in `taobao`, so those labels carry the same
learnable signal; a world changes the click model (_click_logits: true logit, property-blind
logit, the match score shown as ranking feature 2) and a few knobs (World's class attributes).
"""
from __future__ import annotations

from pipeline.rawlogs.synth_world import World
from pipeline.rawlogs.worlds.interests import InterestsWorld
from pipeline.rawlogs.worlds.mixed import MixedWorld
from pipeline.rawlogs.worlds.price import PriceWorld
from pipeline.rawlogs.worlds.properties import PropertiesWorld
from pipeline.rawlogs.worlds.revisits import RevisitsWorld

WORLDS = {"taobao": World, "interests": InterestsWorld, "properties": PropertiesWorld,
          "revisits": RevisitsWorld, "price": PriceWorld, "mixed": MixedWorld}
DEFAULT_WORLD = "taobao"


def make_world(name: str, users: int, seed: int, items: int | None = None) -> World:
    """The world called name, built for users and seed; items: the catalogue's size (None: the
    world's default, 3 per user)."""
    if name not in WORLDS:
        raise ValueError(f"world {name!r} is not one of {', '.join(WORLDS)}")
    return WORLDS[name](users, seed, items)
