"""Synthetic tasks: a character tokenizer, arithmetic problems and verifiers.

``CharTokenizer`` fixes the 64-id vocabulary of the synthetic tasks;
``make_task("add2")`` gives a task whose ``sample(key, B)`` draws prompts,
answers and gold completions on device, with a held-out eval split that
training never sees; ``exact_match`` and ``make_verifier`` reward sampled
completions on device.
"""

from jaxrl_group.tasks._arithmetic import ArithmeticTask
from jaxrl_group.tasks._arithmetic import EVAL_BITS
from jaxrl_group.tasks._arithmetic import EVAL_FRACTION
from jaxrl_group.tasks._arithmetic import MAX_ANSWER_DIGITS
from jaxrl_group.tasks._arithmetic import OPS
from jaxrl_group.tasks._arithmetic import SPLITS
from jaxrl_group.tasks._arithmetic import TASKS
from jaxrl_group.tasks._arithmetic import TaskBatch
from jaxrl_group.tasks._arithmetic import build_batch
from jaxrl_group.tasks._arithmetic import is_eval_problem
from jaxrl_group.tasks._arithmetic import make_task
from jaxrl_group.tasks._arithmetic import sft_batch
from jaxrl_group.tasks._tokenizer import BOS_ID
from jaxrl_group.tasks._tokenizer import CHAR_TO_ID
from jaxrl_group.tasks._tokenizer import CharTokenizer
from jaxrl_group.tasks._tokenizer import DIGIT0_ID
from jaxrl_group.tasks._tokenizer import EOS_ID
from jaxrl_group.tasks._tokenizer import PAD_ID
from jaxrl_group.tasks._tokenizer import UNK_ID
from jaxrl_group.tasks._tokenizer import VOCAB
from jaxrl_group.tasks._tokenizer import VOCAB_SIZE
from jaxrl_group.tasks._verifiers import VERIFIERS
from jaxrl_group.tasks._verifiers import exact_match
from jaxrl_group.tasks._verifiers import format_reward
from jaxrl_group.tasks._verifiers import make_verifier
from jaxrl_group.tasks._verifiers import parse_answer

__all__ = (
    "ArithmeticTask",
    "BOS_ID",
    "build_batch",
    "CHAR_TO_ID",
    "CharTokenizer",
    "DIGIT0_ID",
    "EOS_ID",
    "EVAL_BITS",
    "EVAL_FRACTION",
    "exact_match",
    "format_reward",
    "is_eval_problem",
    "make_task",
    "make_verifier",
    "MAX_ANSWER_DIGITS",
    "OPS",
    "PAD_ID",
    "parse_answer",
    "sft_batch",
    "SPLITS",
    "TaskBatch",
    "TASKS",
    "UNK_ID",
    "VERIFIERS",
    "VOCAB",
    "VOCAB_SIZE",
)
