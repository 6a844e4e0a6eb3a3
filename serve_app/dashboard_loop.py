"""The Loop page: how the router learns, from measured outcomes to a promoted (or rolled back) policy.

Everything comes from the router (``GET /v1/loop``), so the page shows what an API client gets:
the simulator's timing model against what the router measured, before and after ``orchestrator
calibrate``; the challenger in shadow, how often it agrees with the champion and what the model
expected of each choice where they differ; the counterfactual and retrain replays of the history
(each policy's objective on the same arrivals, with intervals); and the promotions the router made
or undid. An empty part says which command fills it.
"""
from __future__ import annotations

import time

import streamlit as st

from serve_app import loop_tables as lt
from serve_app.charts import calibration_chart, objective_chart
from serve_app.client import RouterError
from serve_app.dashboard_common import client, download, table


def page_loop() -> None:
    st.header("Learning loop")
    hours = st.number_input("Shadow decisions of the last (hours)", 1, 24 * 365, 24,
                            help="the window of the history the challenger's agreement is read from")
    try:
        doc = client().loop(float(hours))
    except RouterError as exc:
        st.info(f"No learning loop to show: {exc}")
        return
    sections = [("champion", lambda: _champion(doc)), ("calibration", lambda: _calibration(doc["calibration"])),
                ("shadow", lambda: _shadow(doc["shadow"])),
                ("counterfactual", lambda: _replay("Counterfactual replay of the history", doc["counterfactual"],
                                                   "counterfactual")),
                ("retrain", lambda: _replay("Retrained challenger", doc["retrain"], "retrain")),
                ("promotion", lambda: _promotions(doc.get("promotion") or {}))]
    for k, (name, show) in enumerate(sections):
        if k and name != "retrain":
            st.divider()
        try:  # a report of another shape (an older command, the wrong file) spoils its own section only
            show()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            st.warning(f"The {name} part cannot be shown: its report has an unexpected shape "
                       f"({type(exc).__name__}: {exc}); rerun the command that writes it.")


def _ago(ts: float | None) -> str:
    if ts is None:
        return "at an unknown time"
    mins = max(0.0, time.time() - ts) / 60.0
    return f"{mins:.0f} min ago" if mins < 120 else f"{mins / 60:.1f} h ago"


def _champion(doc: dict) -> None:
    st.subheader("Champion and challenger")
    champion, challenger = doc["champion"], doc.get("challenger")
    pair = next((p for p in doc["shadow"]["pairs"]
                 if p["champion"] == champion and p["challenger"] == challenger), None)
    watching = (doc.get("promotion") or {}).get("watching")
    # names as text, not st.metric values: a metric cuts a long policy name short
    st.markdown(f"Champion (acts): **{champion}** · challenger (in shadow): **{challenger or 'none'}**")
    m1, m2 = st.columns(2)
    m1.metric("Agreement", "n/a" if pair is None or pair["agreement_pct"] is None else f"{pair['agreement_pct']:.1f}%",
              help="of the challenger's decisions beside this champion in the window below")
    m2.metric("Promotion", "being judged" if watching else "none in progress",
              help=f"{watching['policy']} against {watching['against']}: {watching['progress']}" if watching else None)
    if challenger is None:
        st.caption("No challenger decides in shadow: an admin starts one with `PUT /v1/shadow` "
                   "(`{\"policy\": \"rl\"}`) or the router arg `shadow_policy`.")
    retrain = doc["retrain"]["report"]
    if retrain and retrain.get("challenger") in (retrain.get("policies") or {}):
        st.caption(f"Latest retrain: {lt.verdict(retrain, retrain['challenger'])}, on the history's own arrivals.")


def _calibration(part: dict) -> None:
    st.subheader("Simulator against measured latency")
    rep = part["report"]
    if rep is None:
        st.info(part["note"])
        return
    held, fit = rep["held_out"], rep["fit"]
    st.caption(f"`orchestrator calibrate` on `{rep.get('history')}` (cluster {rep.get('cluster')}), written "
               f"{_ago(part['written_at'])}: the model's per-task latency at decision time against what the router "
               f"measured, fitted on the {fit['tasks']} oldest succeeded tasks and judged on the {held['tasks']} "
               f"newest (held out), before and after the fitted profile.")
    by_class = lt.calibration_by_class(rep)
    if by_class.empty:
        st.caption("This report has no per-class figures (written by an older `orchestrator calibrate`): "
                   "rerun it for them.")
    else:
        st.altair_chart(calibration_chart(lt.calibration_long(by_class)), width="stretch")
        table(by_class)
    table(lt.calibration_overall(rep))
    st.caption("The fitted execution factors, measured / modelled per node class and task kind (the calibrated "
               "simulator divides a node's speed by them; a dash: the kind's factor over every class applies):")
    table(lt.factors(rep))


def _shadow(sh: dict) -> None:
    st.subheader("Challenger in shadow")
    if not sh["pairs"]:
        st.info(f"No task accepted in the last {sh['hours']:g} h was decided with a challenger in shadow.")
        return
    since = lt.when(sh["first_accepted"])
    st.caption(f"{sh['decisions_read']:,} decisions with a shadow since {since} UTC"
               f"{' (the newest only: more are in the window)' if sh['truncated'] else ''}. A challenger never acts: "
               "it decides on the state the champion decided on, and its record keeps its choice.")
    table(lt.shadow_agreement(sh["pairs"]))
    expected = lt.shadow_expected(sh["pairs"])
    if not expected.empty:
        st.caption("Where they chose different nodes, the model's expected objective score (lower is better) and "
                   "latency of each choice at decision time; the champion's measured score is over its succeeded "
                   "tasks in the window.")
        table(expected)


def _replay(title: str, part: dict, name: str) -> None:
    st.subheader(title)
    rep = part["report"]
    if rep is None:
        st.info(part["note"])
        return
    pols = list(rep.get("policies") or {})
    if not pols:
        st.info(f"The {name} report {part['path']} compares no policy.")
        return
    measured = (rep.get("measured") or {}).get("objective")
    seeds = ", ".join(map(str, rep.get("seeds", [])))
    st.caption(f"{rep.get('tasks')} tasks of `{rep.get('history')}` replayed on {rep.get('cluster')}"
               f"{' (calibrated)' if rep.get('calibration') else ''}, seeds {seeds}; "
               f"written {_ago(part['written_at'])}. Each policy meets the same arrivals; the difference from "
               f"{pols[0]} (the champion) is per task, with its 95% interval."
               + (f" The router measured a mean objective of {measured:.3f} on these tasks." if measured is not None
                  else ""))
    df = lt.objectives(rep)
    st.altair_chart(objective_chart(df), width="stretch")
    table(df)
    for other in pols[1:]:
        st.caption(lt.verdict(rep, other) + ".")
    download(df, name)


def _promotions(promo: dict) -> None:
    st.subheader("Promotions and rollbacks")
    if not promo:
        st.info("This router reports no promotion state.")
        return
    watching = promo.get("watching")
    st.caption(f"A promoted challenger is judged on its first {promo.get('window')} succeeded tasks and rolled back "
               f"when its SLO-miss rate exceeds the old champion's by more than {100 * promo.get('margin', 0):g} "
               "points.")
    if watching:
        st.warning(f"{watching['policy']} is being judged against {watching['against']} "
                   f"(baseline miss rate {100 * watching['baseline_miss_rate']:.1f}%): {watching['progress']}.")
    log = promo.get("log") or []
    if not log:
        st.info("No promotion yet since the router started: an admin promotes the challenger with "
                "`POST /v1/policy/promote` (`orchestrator policy promote`).")
        return
    table(lt.promotion_log(log))
