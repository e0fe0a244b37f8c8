"""What a table or figure says about how far its numbers compare with the paper's: one note per recipe scale
(:class:`ghost.recipes.Scale`; a full-scale recipe needs none)."""

from __future__ import annotations

from ghost.recipes import Scale

_HEADS = {Scale.SMOKE: "SMOKE SCALE", Scale.BUDGET: "BUDGET SCALE"}
_TABLE_NOTES = {
    Scale.SMOKE: "these accuracies only show that the pipeline runs end to end (tiny training subset, very few "
    "epochs); they are not comparable to the paper's.",
    Scale.BUDGET: "real accuracies of a short run sized for a small machine (see the recipe: fewer epochs, and for "
    "ImageNet-format data a reduced resolution), not converged; they are not comparable to the paper's.",
}
_FIGURE_NOTES = {
    Scale.SMOKE: "measured accuracies are not comparable to the paper's",
    Scale.BUDGET: "real accuracies of a short run, not comparable to the paper's",
}


def noted(scales: object) -> list[Scale]:
    """The scales among ``scales`` (values or names) that need a note, smoke first (the stronger warning)."""
    present = {str(scale) for scale in scales}
    return [scale for scale in (Scale.SMOKE, Scale.BUDGET) if scale in present]


def table_banner(scale: Scale, detail: str | None = None) -> str:
    """The Markdown line above a table of ``scale``: ``**BUDGET SCALE**: ...`` (``detail`` instead of the
    general note, for a table whose runs need a more specific one)."""
    return f"**{_HEADS[scale]}**: {detail or _TABLE_NOTES[scale]}"


def figure_note(scale: Scale, detail: str | None = None) -> str:
    """The line under a figure's title for ``scale``: ``BUDGET SCALE: ...``."""
    return f"{_HEADS[scale]}: {detail or _FIGURE_NOTES[scale]}"
