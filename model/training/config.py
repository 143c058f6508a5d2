"""Ablation configs: a preset's ModelConfig with some fields overridden (`--model d_model=192,...`).

Values are parsed by the field's type in the preset (ints, floats, bools, and tuples written a-b-c); nested
trunk fields as `trunk.embed_dim`. A checkpoint records the fields that differ from its preset
(`config_overrides`), so a run can be resumed and its weights rebuilt."""

from dataclasses import fields, replace

from ..config import ModelConfig


def parse_overrides(text: str) -> dict[str, str]:
    """'a=1,trunk.b=2-3' -> {'a': '1', 'trunk.b': '2-3'} (values parsed against a config by model_config)."""
    out = {}
    for item in filter(None, text.split(",")):
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise ValueError(f"model overrides are FIELD=VALUE pairs, got {item!r} in {text!r}")
        out[name.strip()] = value.strip()
    return out


def _value(current, text: str, name: str):
    if isinstance(current, bool):
        if text not in ("true", "false"):
            raise ValueError(f"{name} is a bool: true or false, got {text!r}")
        return text == "true"
    if isinstance(current, tuple):
        return tuple(type(current[0])(v) for v in text.split("-")) if current else ()
    try:
        return type(current)(text)
    except ValueError:
        raise ValueError(f"{name} must be a {type(current).__name__}, got {text!r}") from None


def _replace(cfg, overrides: dict[str, str], prefix: str = ""):
    known = {f.name for f in fields(cfg)}
    flat = {k: v for k, v in overrides.items() if "." not in k}
    for name in flat:
        if name not in known or name in ("name", "trunk", "image_size"):
            raise ValueError(f"unknown or fixed config field {prefix + name!r}; overridable: "
                             f"{', '.join(sorted(known - {'name', 'trunk', 'image_size'}))}")
    return replace(cfg, **{k: _value(getattr(cfg, k), v, prefix + k) for k, v in flat.items()})


def model_config(base: ModelConfig, overrides: dict[str, str], multimask: bool = False) -> ModelConfig:
    """`base` with `overrides` ({'d_model': '192', 'trunk.embed_dim': '48'}); `multimask`: single clicks get 3
    candidate masks (SAM 2's multimask_max_pt_num=1; tracking stays single-mask)."""
    trunk = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("trunk.")}
    other = {k: v for k, v in overrides.items() if not k.startswith("trunk.")}
    if any("." in k for k in other):
        raise ValueError(f"nested config fields are trunk.* only, got {sorted(other)}")
    cfg = _replace(base, other)
    if trunk:
        cfg = replace(cfg, trunk=_replace(cfg.trunk, trunk, "trunk."))
    return replace(cfg, multimask_max_pt_num=1) if multimask else cfg


def config_overrides(cfg: ModelConfig, base: ModelConfig) -> dict[str, str]:
    """The fields of `cfg` that differ from `base` (image size aside), in parse_overrides' spelling."""
    def text(v):
        return "-".join(map(str, v)) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v)

    out = {f.name: text(getattr(cfg, f.name)) for f in fields(cfg)
           if f.name not in ("trunk", "image_size") and getattr(cfg, f.name) != getattr(base, f.name)}
    out.update({f"trunk.{f.name}": text(getattr(cfg.trunk, f.name)) for f in fields(cfg.trunk)
                if getattr(cfg.trunk, f.name) != getattr(base.trunk, f.name)})
    return out
