"""How many rows Captum runs in one forward and backward pass of an integrated-gradients
attribution over token inputs (its `internal_batch_size`), sized by padded tokens.

Why: Captum expands a batch of B inputs to B x n_steps rows and runs them in passes of at most
`internal_batch_size` rows. Sluice used to pass its explain batch size (8) there, so 24 steps
ran as 24 passes of 8 short rows where a direct call runs one pass of 192: zero-shot-text with
`--explain all` ran at 0.81x a direct Captum call (issue 16). Small passes waste the CPU's
(and more so a GPU's) matrix units; large ones hold more activations for the backward pass.
A budget of padded tokens per pass gives short texts one or two passes and keeps long ones
to what the old sizing already held (8 rows of 512 tokens = 4096 tokens).
"""

import math

TOKENS_PER_PASS = 4096  # padded tokens one pass runs (rows x padded length)


def rows_per_pass(
    inputs: int, padded_length: int, steps: int, tokens_per_pass: int | None = None
) -> int:
    """Captum's `internal_batch_size` for `inputs` rows padded to `padded_length` tokens,
    attributed over `steps` steps: every step of every input in as few passes as the token
    budget allows, the steps shared evenly between the passes (a last pass of one step would
    cost a call for little work). A multiple of `inputs`, as Captum splits by steps; at least
    `inputs` (one step per pass: Captum's smallest pass), whatever the budget (default
    TOKENS_PER_PASS)."""
    budget = TOKENS_PER_PASS if tokens_per_pass is None else tokens_per_pass
    inputs, steps = max(1, inputs), max(1, steps)
    steps_that_fit = max(1, budget // (inputs * max(1, padded_length)))
    passes = math.ceil(steps / steps_that_fit)
    return inputs * math.ceil(steps / passes)
