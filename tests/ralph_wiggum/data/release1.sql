-- A database as the first release (dfe7dad: create_all, no alembic_version) left it, dumped with sqlite3's
-- iterdump: a completed task with two iterations, a queued one, a running one with its process group.
BEGIN TRANSACTION;
CREATE TABLE events (
	id INTEGER NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	type VARCHAR(32) NOT NULL,
	data JSON NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(task_id) REFERENCES tasks (id)
);
INSERT INTO "events" VALUES(1,'done1','status','{"status": "queued"}','2026-11-29 17:37:43.168579');
INSERT INTO "events" VALUES(2,'done1','status','{"status": "running", "iteration": 0, "completion_reason": null, "error": null}','2026-11-29 17:37:43.171010');
INSERT INTO "events" VALUES(3,'done1','iteration_started','{"iteration": 1, "attempt": 1}','2026-11-29 17:37:43.178620');
INSERT INTO "events" VALUES(4,'done1','iteration_finished','{"iteration": 1}','2026-11-29 17:37:43.178786');
INSERT INTO "events" VALUES(5,'done1','iteration_started','{"iteration": 2, "attempt": 1}','2026-11-29 17:37:43.190680');
INSERT INTO "events" VALUES(6,'done1','iteration_finished','{"iteration": 2}','2026-11-29 17:37:43.190858');
INSERT INTO "events" VALUES(7,'done1','status','{"status": "completed", "iteration": 2, "completion_reason": "check_command", "error": null}','2026-11-29 17:37:43.190858');
INSERT INTO "events" VALUES(8,'queued2','status','{"status": "queued"}','2026-11-29 17:37:43.198076');
INSERT INTO "events" VALUES(9,'run3','status','{"status": "queued"}','2026-11-29 17:37:43.198431');
INSERT INTO "events" VALUES(10,'run3','status','{"status": "running", "iteration": 0, "completion_reason": null, "error": null}','2026-11-29 17:37:43.198708');
CREATE TABLE iterations (
	id INTEGER NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	number INTEGER NOT NULL,
	started_at DATETIME NOT NULL,
	finished_at DATETIME,
	duration_seconds FLOAT,
	status VARCHAR(16),
	exit_code INTEGER,
	output TEXT NOT NULL,
	error TEXT,
	files_modified JSON NOT NULL,
	diff_stat TEXT,
	checkpoint_commit VARCHAR(64),
	check_exit_code INTEGER,
	check_output TEXT,
	prompt_tokens INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	transient_retries INTEGER NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (task_id, number),
	FOREIGN KEY(task_id) REFERENCES tasks (id)
);
INSERT INTO "iterations" VALUES(1,'done1',1,'2026-11-29 17:37:43.178766','2026-11-29 17:37:43.178786',1.5,'success',0,'output 1',NULL,'["a.py"]',NULL,'cccccccccccccccccccccccccccccccccccccccc',1,NULL,10,2,0);
INSERT INTO "iterations" VALUES(2,'done1',2,'2026-11-29 17:37:43.190837','2026-11-29 17:37:43.190858',1.5,'success',0,'output 2',NULL,'[]',NULL,NULL,0,NULL,10,2,0);
CREATE TABLE process_groups (
	id INTEGER NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	iteration INTEGER NOT NULL,
	pgid INTEGER NOT NULL,
	leader_start BIGINT NOT NULL,
	boot_id VARCHAR(64) NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(task_id) REFERENCES tasks (id)
);
INSERT INTO "process_groups" VALUES(1,'run3',1,4242,17,'boot-1','2026-11-29 17:37:43.208237');
CREATE TABLE tasks (
	id VARCHAR(32) NOT NULL,
	prompt TEXT NOT NULL,
	backend VARCHAR(64) NOT NULL,
	workspace TEXT NOT NULL,
	worktree TEXT,
	branch VARCHAR(128),
	base_commit VARCHAR(64),
	status VARCHAR(32) NOT NULL,
	iteration INTEGER NOT NULL,
	max_iterations INTEGER NOT NULL,
	limit_source VARCHAR(16) NOT NULL,
	complexity VARCHAR(16),
	complexity_reason TEXT,
	require_approval BOOLEAN NOT NULL,
	approved_through INTEGER NOT NULL,
	stop_requested BOOLEAN NOT NULL,
	check_command TEXT,
	completion_promise TEXT,
	context JSON NOT NULL,
	created_at DATETIME NOT NULL,
	started_at DATETIME,
	finished_at DATETIME,
	updated_at DATETIME NOT NULL,
	completion_reason VARCHAR(64),
	evidence JSON,
	error TEXT,
	prompt_tokens INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	PRIMARY KEY (id)
);
INSERT INTO "tasks" VALUES('done1','add a test','command','/ws/repo',NULL,'aistack/done1','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','completed',2,5,'request',NULL,NULL,0,0,0,NULL,NULL,'{"files": ["a.py"]}','2026-11-29 17:37:43.168579',NULL,'2026-11-29 17:37:43.190858','2026-11-29 17:37:43.190858','check_command','{"rule": "check_command"}',NULL,20,4);
INSERT INTO "tasks" VALUES('queued2','fix the bug','aider','/ws/other',NULL,NULL,NULL,'queued',0,20,'default','default',NULL,0,0,0,NULL,NULL,'{}','2026-11-29 17:37:43.198076',NULL,NULL,'2026-11-29 17:37:43.198076',NULL,'null',NULL,0,0);
INSERT INTO "tasks" VALUES('run3','refactor','command','/ws/repo',NULL,NULL,NULL,'running',0,3,'request',NULL,NULL,0,0,0,NULL,NULL,'{}','2026-11-29 17:37:43.198431',NULL,NULL,'2026-11-29 17:37:43.198708',NULL,'null',NULL,0,0);
CREATE INDEX ix_tasks_created_at ON tasks (created_at);
CREATE INDEX ix_tasks_status ON tasks (status);
CREATE INDEX ix_iterations_task_id ON iterations (task_id);
CREATE INDEX ix_events_task_id ON events (task_id);
CREATE INDEX ix_process_groups_task_id ON process_groups (task_id);
COMMIT;
