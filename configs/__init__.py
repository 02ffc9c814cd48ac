"""Typed configuration of DUPN, loaded from the YAML files beside this module."""
from configs.loader import (ConfigError, add_config_args, config_from_args, dump_config,
                            from_dict, load_config, to_dict)
from configs.schema import (TASKS, VARIANTS, Config, DataConfig, FeaturesConfig, HeadConfig,
                            ModelConfig, RuntimeConfig, Table, TrainerConfig)

__all__ = [
    "ConfigError", "add_config_args", "config_from_args", "dump_config", "from_dict",
    "load_config", "to_dict", "TASKS", "VARIANTS", "Config", "DataConfig", "FeaturesConfig",
    "HeadConfig", "ModelConfig", "RuntimeConfig", "Table", "TrainerConfig",
]
