"""Recipes: validation names the bad key and allowed values; overrides are typed; shipped recipes load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spellfix.config import RecipeError, list_recipes, load_recipe, save_recipe


def test_unknown_key_is_rejected_with_the_allowed_keys(tiny_recipe_dict):
    tiny_recipe_dict["train"]["learning_rate"] = 1e-3
    with pytest.raises(RecipeError, match=r"unknown key 'train.learning_rate'.*allowed keys here: .*\blr\b"):
        load_recipe(tiny_recipe_dict)


def test_bad_choice_names_the_field_and_the_allowed_values(tiny_recipe_dict):
    tiny_recipe_dict["train"]["precision"] = "fp8"
    with pytest.raises(RecipeError, match=r"train.precision: 'fp8' is not allowed; expected one of 'auto', 'fp32', 'fp16', 'bf16'"):
        load_recipe(tiny_recipe_dict)


def test_wrong_type_names_the_field(tiny_recipe_dict):
    tiny_recipe_dict["train"]["global_batch_size"] = "many"
    with pytest.raises(RecipeError, match=r"train.global_batch_size: expected an integer"):
        load_recipe(tiny_recipe_dict)


def test_set_overrides_are_parsed_against_the_field_type(tiny_recipe_dict):
    recipe = load_recipe(tiny_recipe_dict, overrides=["train.lr=3e-4", "train.max_steps=7", "train.compile=true", "data.on_error=error"])
    assert recipe.train.lr == pytest.approx(3e-4)
    assert recipe.train.max_steps == 7 and isinstance(recipe.train.max_steps, int)
    assert recipe.train.compile is True
    assert recipe.data.on_error == "error"


def test_dict_overrides_from_python(tiny_recipe_dict):
    recipe = load_recipe(tiny_recipe_dict, overrides={"train.lr": 5e-4, "eval.num_beams": 4})
    assert recipe.train.lr == 5e-4 and recipe.eval.num_beams == 4


def test_override_of_a_bad_value_is_rejected(tiny_recipe_dict):
    with pytest.raises(RecipeError, match="train.lr_scaling"):
        load_recipe(tiny_recipe_dict, overrides=["train.lr_scaling=cubic"])


def test_recipe_without_data_is_an_error(tiny_recipe_dict):
    tiny_recipe_dict["data"] = {}
    with pytest.raises(RecipeError, match="data.train"):
        load_recipe(tiny_recipe_dict)


def test_negative_dictionary_words_is_an_error(tiny_recipe_dict):
    with pytest.raises(RecipeError, match="data.dictionary_words must be >= 0, got -5"):
        load_recipe(tiny_recipe_dict, overrides=["data.dictionary_words=-5"])


def test_resolved_recipe_round_trips_through_yaml(tiny_recipe_dict, tmp_path: Path):
    recipe = load_recipe(tiny_recipe_dict, overrides=["train.lr=1e-4"])
    save_recipe(recipe, tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again.to_dict() == recipe.to_dict()
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["train"]["lr"] == 1e-4


def test_missing_recipe_file_lists_the_shipped_ones():
    with pytest.raises(RecipeError, match="recipe not found: nope.yaml"):
        load_recipe("nope.yaml")


@pytest.mark.parametrize("name", [name for name, _ in list_recipes()])
def test_every_shipped_recipe_loads(name):
    recipe = load_recipe(name)
    assert recipe.name == name
