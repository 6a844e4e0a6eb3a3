"""Capacity planning: demand series, forecasts and their backtests, recommendations by simulation.

Why a package of its own: forecasting demand is a concern above the simulator. It reads
workload files and traces through ``simulations`` and task records as plain dicts (the
router's history rows, so ``serve_app`` is never imported); nothing below imports it.

* :mod:`capacity.series`: the one demand table (arrivals and resource-seconds per interval,
  kind, pool and GPU share) and its forecasting views;
* :mod:`capacity.sources`: that table from a workload file, the Alibaba trace, the Azure LLM
  trace or history records;
* :mod:`capacity.models`, :mod:`capacity.forecast`, :mod:`capacity.backtest`: statsforecast and
  LightGBM (mlforecast) forecasts with prediction intervals, beside the seasonal-naive baseline,
  and rolling-origin backtests (:mod:`capacity.metrics`);
* :mod:`capacity.recommend`: the cheapest node counts and MIG layouts meeting an SLO-miss target at
  the forecast's peak, found by what-if runs of the simulator under the active policy;
* :mod:`capacity.strategies`: static peak, reactive, forecast-driven and forecast-plus-reactive scaling
  compared over days on one MIG layout (by default the one recommended for the peak), beside hindsight (each
  step planned for its actual rate);
* :mod:`capacity.live`: the router's views, its history's forecast beside the actuals and the latest
  recommendation (``GET /v1/capacity/...`` and the Streamlit "Capacity" page);
* :mod:`capacity.cli`: ``orchestrator capacity forecast|backtest|recommend|strategies``; :mod:`capacity.page` its
  dated Markdown page (:mod:`capacity.report` lays out the backtest page).
"""
