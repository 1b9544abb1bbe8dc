"""The stages of an image competition declared in pipeline.toml: download -> preprocess (its
files into one tensor file) -> train -> evaluate (on the held-out part of its labelled images),
train -> submit (in the sample's format). Training and scoring are every image target's
(:mod:`pipeline.images.stages`); the images come from the target's tensor file."""

from __future__ import annotations

from pathlib import Path

from pipeline.images import stages as image_stages
from pipeline.images.sets import ImageSet
from pipeline.make import Context, Stage, every_param, keys
from pipeline.submissions import write_copies


def preprocess(ctx: Context) -> tuple[list[Path], dict]:
    return ctx.target.preprocess(ctx.workspace.data, ctx.progress(f"preprocess {ctx.target.name}"))


def _images(ctx: Context) -> ImageSet:
    return ctx.target.images(ctx.workspace.data)


def train(ctx: Context) -> tuple[list[Path], dict]:
    return image_stages.fit(ctx, _images)


def evaluate(ctx: Context) -> tuple[list[Path], dict]:
    return image_stages.score(ctx, _images)


def submit(ctx: Context) -> tuple[list[Path], dict]:
    data = _images(ctx)
    probabilities = image_stages.test_logits(ctx, data).softmax(1).numpy()
    frame, checks = ctx.target.submission(data, probabilities, ctx.workspace.data)
    return write_copies(ctx.workspace.submissions / f"{ctx.target.name}-{ctx.params['model']}.csv", ctx.out, frame,
                        **checks)


STAGES = (
    Stage("download", (), keys(), image_stages.download),
    Stage("preprocess", ("download",), lambda ctx: ctx.target.spec.values(), preprocess),
    Stage("train", ("preprocess",), every_param(besides=("tta",)), train),
    Stage("evaluate", ("train",), keys("model", "tta"), evaluate),
    Stage("submit", ("train",), keys("model", "tta"), submit),
)
