"""The arena's reads and writes in MLflow, made through this server's REST API as the user who
asked (their Basic login, when basic auth is on), so that MLflow's own permissions decide: a user
who may only read the experiment gets MLflow's 403, before anything is generated. Blocking calls:
the routes run them in a worker thread."""

from __future__ import annotations

import time

from tracking import mlflow_compat
from tracking.arena import records
from tracking.arena.protocol import ArenaRequestError
from tracking.arena.records import Battle, StoredSide

PAGE_SIZE = 500
MAX_TRACES = 20_000


def mlflow_error(e: Exception, doing: str, user: str = "") -> ArenaRequestError:
    """An MLflow refusal as the arena's answer: MLflow's status and message (a 403 for a user
    without permission, a 404 for an experiment that does not exist)."""
    status = getattr(e, "get_http_status_code", lambda: 500)()
    message = getattr(e, "message", None) or str(e)
    if status == 403:
        who = f"user {user!r}" if user else "this user"
        return ArenaRequestError(
            403,
            f"Permission denied: {who} may not {doing} (MLflow's permissions; an admin can "
            "grant EDIT on the experiment)",
        )
    if status == 500 and "Connection" in type(e).__name__:
        message = "the tracking server did not answer"
    return ArenaRequestError(
        status if 400 <= status < 600 else 502, f"Could not {doing}: {message}"
    )


class ArenaStore:
    def __init__(self, host: str, login: tuple[str, str] | None):
        self.user = login[0] if login else ""
        username, password = login if login else (None, None)
        self.store = mlflow_compat.rest_tracking_store(host, username, password)

    def _call(self, doing: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            raise mlflow_error(e, doing, self.user) from None

    def experiment_name(self, experiment_id: str) -> str:
        return self._call(
            f"read experiment {experiment_id}", self.store.get_experiment, experiment_id
        ).name

    def start(self, battle: Battle) -> None:
        """Both traces, in progress: also the check that the user may write to the experiment."""
        for side in battle.sides:
            self._call(
                f"write to experiment {battle.experiment_id}",
                self.store.start_trace,
                records.trace_info(battle, side, finished=False),
            )

    def finish(self, battle: Battle) -> None:
        """Each side's span, then its final state, metadata and previews."""
        for side in battle.sides:
            doing = f"record the answer of side {side.side} in experiment {battle.experiment_id}"
            self._call(
                doing, self.store.log_spans, battle.experiment_id, [records.span(battle, side)]
            )
            self._call(
                doing, self.store.start_trace, records.trace_info(battle, side, finished=True)
            )

    def battle(self, experiment_id: str, battle_id: str) -> dict[str, StoredSide]:
        infos, _ = self._call(
            f"read experiment {experiment_id}",
            self.store.search_traces,
            locations=[experiment_id],
            filter_string=f"tag.`{records.BATTLE_TAG}` = '{battle_id}'",
            max_results=10,
        )
        return records.sides_by_battle(infos).get(battle_id, {})

    def battles(self, experiment_id: str) -> dict[str, dict[str, StoredSide]]:
        infos: list = []
        token = None
        while len(infos) < MAX_TRACES:
            page, token = self._call(
                f"read experiment {experiment_id}",
                self.store.search_traces,
                locations=[experiment_id],
                filter_string=f"tag.`{records.ARENA_TAG}` = 'battle'",
                max_results=PAGE_SIZE,
                page_token=token,
            )
            infos += page
            if not token:
                break
        return records.sides_by_battle(infos)

    def vote(
        self,
        experiment_id: str,
        battle_id: str,
        trace_ids: dict[str, str],
        vote: str,
        source_type: str,
        source_id: str,
        rationale: str = "",
    ) -> None:
        for side, value in zip(records.SIDES, records.VALUES[vote], strict=True):
            self._call(
                f"record the vote in experiment {experiment_id}",
                self.store.create_assessment,
                records.feedback(
                    trace_ids[side], value, battle_id, source_type, source_id, rationale
                ),
            )

    def log_board(self, experiment_id: str) -> tuple[str, dict]:
        """Log the experiment's leaderboard as a run; (run id, the board)."""
        from tracking.arena.board import (
            BOARD_RUN_NAME,
            leaderboard_metrics,
            leaderboard_note,
            leaderboard_of,
            leaderboard_params,
        )

        name = self.experiment_name(experiment_id)
        board = leaderboard_of(experiment_id, self.battles(experiment_id))
        run_id = self.log_leaderboard_run(
            experiment_id,
            BOARD_RUN_NAME,
            leaderboard_metrics(board),
            leaderboard_note(board, name),
            leaderboard_params(board),
        )
        return run_id, board

    def log_leaderboard_run(
        self, experiment_id: str, run_name: str, metrics: dict[str, float], note: str, params: dict
    ) -> str:
        from mlflow.entities import Metric, Param, RunStatus, RunTag

        doing = f"log the leaderboard in experiment {experiment_id}"
        now = int(time.time() * 1000)
        tags = [RunTag("mlflow.note.content", note), RunTag(records.ARENA_TAG, "leaderboard")]
        if self.user:
            tags.append(RunTag("mlflow.user", self.user))
        run = self._call(
            doing, self.store.create_run, experiment_id, self.user or None, now, tags, run_name
        )
        run_id = run.info.run_id
        self._call(
            doing,
            self.store.log_batch,
            run_id,
            [Metric(k, v, now, 0) for k, v in metrics.items()],
            [Param(k, str(v)) for k, v in params.items()],
            [],
        )
        self._call(
            doing,
            self.store.update_run_info,
            run_id,
            RunStatus.to_string(RunStatus.FINISHED),
            now,
            run_name,
        )
        return run_id
