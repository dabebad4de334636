"""A job's curves as a PNG, for tools that show images rather than read JSON: training and
validation loss by step above, the learning rate below. Drawn with matplotlib's
object-oriented API on the Agg canvas (no pyplot: no global figure state shared between
the API's threads), imported on the first picture so that the API starts without it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from core.models import Job, JobMetric

WIDTH_INCHES, HEIGHT_INCHES, DPI = 9.0, 5.5, 100  # 900 × 550 pixels

Series = tuple[list[int], list[float]]


def _series(points: Sequence[JobMetric], split: str, field: str) -> Series:
    """(steps, values) of one figure of one split, leaving out the steps that lack it."""
    pairs = [(p.step, getattr(p, field)) for p in points if p.split == split and getattr(p, field) is not None]
    return [step for step, _ in pairs], [float(value) for _, value in pairs]


@dataclass(frozen=True)
class MetricsChart:
    """What the picture shows, read from the database before drawing starts (the drawing
    then holds no database connection)."""

    title: str
    status: str
    train_loss: Series
    valid_loss: Series
    learning_rate: Series

    @classmethod
    def of(cls, job: Job, points: Sequence[JobMetric]) -> MetricsChart:
        return cls(
            title=f"{job.id} ({job.model})",
            status=str(job.status),
            train_loss=_series(points, "train", "loss"),
            valid_loss=_series(points, "valid", "loss"),
            learning_rate=_series(points, "train", "learning_rate"),
        )

    def png(self) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        loss, rate = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        figure.suptitle(f"{self.title}: {self.status}")
        loss.plot(*self.train_loss, label="train loss", color="tab:blue")
        loss.plot(*self.valid_loss, label="validation loss", color="tab:orange", marker="o")
        rate.plot(*self.learning_rate, color="tab:green")
        loss.set_ylabel("loss")
        rate.set_ylabel("learning rate")
        rate.set_xlabel("step")
        rate.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        for axes in (loss, rate):
            axes.grid(alpha=0.3)
        if self.train_loss[0] or self.valid_loss[0]:
            loss.legend(loc="upper right")
        else:  # empty axes, without the made-up ticks matplotlib gives them
            for axes in (loss, rate):
                axes.tick_params(labelbottom=False, labelleft=False)
            note = f"No metrics yet (the job is {self.status})"
            loss.text(0.5, 0.5, note, ha="center", va="center", transform=loss.transAxes, color="gray", fontsize=14)
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
