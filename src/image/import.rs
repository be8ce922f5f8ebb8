//! Image import (placeholder until written).
