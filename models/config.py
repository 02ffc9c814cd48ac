"""The configuration as the models take it: configs.schema objects turned into the plain dicts of get_config.

build_model (models/dupn.py) translates a Config with these; the models keep the dicts in their
get_config, so a saved model rebuilds without configs/ (models/ never imports it).
"""
from __future__ import annotations

from features.contract import Contract
from models import balance


def contract_config(contract: Contract) -> dict:
    """A JSON-able description of a contract, enough to rebuild it (kept in models' get_config).

    "embeddings" appears only when a table is not plain: models saved before the choice existed
    and models without it describe their contract alike."""
    config = {"sequence_length": contract.sequence_length, "tag_slots": contract.tag_slots,
              "query_terms": contract.query_terms, "rank_features": contract.rank_features,
              "tables": {k: list(v) for k, v in contract.tables.items()},
              "property_dims": dict(contract.property_dims)}
    if contract.embeddings:
        config["embeddings"] = dict(contract.embeddings)
    return config


def contract_from_config(config: dict) -> Contract:
    """The contract of a contract_config."""
    return Contract(config["sequence_length"], config["tag_slots"], config["query_terms"],
                    config["rank_features"], {k: tuple(v) for k, v in config["tables"].items()},
                    config["property_dims"], config.get("embeddings"))


def head_configs(config) -> list[dict]:
    """The heads' dicts of config.model; the ctr head's carries esmm: True with model.esmm."""
    heads = [{"name": h.name, "weight": h.weight, "hidden_units": list(h.hidden_units)}
             for h in config.model.heads]
    if config.model.esmm:
        ctr = [h for h in heads if h["name"] == "ctr"]
        if not ctr:
            raise ValueError("model.esmm needs a ctr head in model.heads (ESMM is the ctr head's)")
        ctr[0]["esmm"] = True
    return heads


def sharing_config(model_config) -> dict:
    """The sharing fields of a configs.schema.ModelConfig as the models take them."""
    m = model_config
    return {"structure": m.sharing, "experts": m.experts, "task_experts": m.task_experts,
            "expert_units": list(m.expert_units), "ple_levels": m.ple_levels}


def balance_spec(trainer) -> dict:
    """The balancing a model is built with, from configs.schema.TrainerConfig."""
    return {"method": trainer.loss_balance, "gradnorm_alpha": trainer.gradnorm_alpha,
            # Read at call time: tests shorten the window by setting the balance module's constant.
            "dwa_temperature": trainer.dwa_temperature, "dwa_window": balance.DWA_WINDOW_STEPS}
