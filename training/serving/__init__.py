"""Serving the student: model versions, tokens, confidence routing, monitoring and cost.

One module per concept; this package re-exports their public names, so callers write
`from training import serving` and `serving.predict_texts(...)`. A test that replaces a
name must replace it in the module that looks it up (`training.serving.routing`, ...).
"""

from __future__ import annotations

from training.serving.cache import forget_cached
from training.serving.config import ServingError, serving_config_for
from training.serving.cost import api_cost, break_even_month, cost_inputs, cost_report, model_cost
from training.serving.limits import fallback_budget_status, fallback_spend, logged_spend, rate_check
from training.serving.monitor import monitoring
from training.serving.routing import (
    Live,
    RoutedAnswer,
    live,
    predict_texts,
    student_predict,
    validate_texts,
    warm_up,
    warm_up_start,
)
from training.serving.tokens import TOKEN_TOUCH_SECONDS, token_check, token_create, token_revoke
from training.serving.versions import (
    SERVING_BATCH_SIZE,
    active_version,
    export_job_run,
    export_job_start,
    onnx_dir_for,
    onnx_measurement,
    onnx_prepare,
    promotion_check,
    recommended_threshold,
    threshold_recommendation,
    version_promote,
    version_rollback,
)
from training.serving.writer import TrafficExample, prediction_logs, traffic_examples

__all__ = [
    "fallback_budget_status",
    "fallback_spend",
    "logged_spend",
    "rate_check",
    "SERVING_BATCH_SIZE",
    "TOKEN_TOUCH_SECONDS",
    "RoutedAnswer",
    "Live",
    "ServingError",
    "TrafficExample",
    "active_version",
    "api_cost",
    "break_even_month",
    "cost_inputs",
    "cost_report",
    "export_job_run",
    "export_job_start",
    "forget_cached",
    "live",
    "model_cost",
    "monitoring",
    "onnx_dir_for",
    "onnx_measurement",
    "onnx_prepare",
    "predict_texts",
    "promotion_check",
    "prediction_logs",
    "recommended_threshold",
    "serving_config_for",
    "student_predict",
    "threshold_recommendation",
    "token_check",
    "token_create",
    "token_revoke",
    "traffic_examples",
    "validate_texts",
    "version_promote",
    "version_rollback",
    "warm_up",
    "warm_up_start",
]
