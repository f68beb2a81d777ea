"""The Markov slice: session-shaped traffic over a target's OpenAPI operations."""

from .model import MarkovModel, State, default_chain, load_markov
from .slice import MarkovSlice

__all__ = ["MarkovModel", "MarkovSlice", "State", "default_chain", "load_markov"]
