"""The tiny ``TrainerConfig`` settings the LLM tests share: 2 iterations of 2 prompts, 4 new tokens, 1 epoch of
minibatches of 4 at lr 1e-2 on the CPU, no progress bar, no final model.  A test module that needs more (epochs,
threads, no win-rate tracking) overrides keys: ``{**TINY, "epochs": 2}``."""

TINY = dict(
    iterations=2,
    prompts_per_iteration=2,
    max_new_tokens=4,
    epochs=1,
    minibatch_size=4,
    learning_rate=1e-2,
    cpu=True,
    progress=False,
    save_final_model=False,
)
