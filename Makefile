# portprint: `make run` runs the nightly job end to end on a sample archive; `make test` runs the tests.
# Both create the virtualenv (.venv) and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
DAYS   ?= 4
FLOWS  ?= 25000

.PHONY: run test lint bench clean check-java

check-java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -1); \
	set -- $$v; major=$${1:-0}; [ "$$major" = 1 ] && major=$${2:-0}; \
	if [ "$$major" -lt 17 ] 2>/dev/null || [ -z "$$v" ]; then \
	  echo "portprint needs Java 17 or newer for Spark (found: $${v:-none})."; \
	  echo "Install it: Debian/Ubuntu 'sudo apt-get install -y openjdk-17-jre-headless'; macOS 'brew install openjdk@17'."; \
	  echo "Then make sure 'java -version' prints 17 or newer (or set JAVA_HOME)."; exit 1; fi

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[local,test]'
	touch $@

run: check-java $(BIN)/.installed
	$(BIN)/portprint sample --out $(DEMO)/flows --days $(DAYS) --flows-per-day $(FLOWS)
	$(BIN)/portprint train --flows $(DEMO)/flows --model $(DEMO)/model --end $$($(BIN)/python -c "import datetime as d; print(d.date(2026,11,1)+d.timedelta(days=$(DAYS)-2))")
	$(BIN)/portprint score --flows $(DEMO)/flows --model $(DEMO)/model --warehouse $(DEMO)/warehouse --new-only
	$(BIN)/portprint sql --warehouse $(DEMO)/warehouse --limit 15 \
	  "SELECT date, detector, header_reason, round(score, 1) AS score, round(qname_score, 1) AS qscore, proto, dst_port, prefix_text, failed_fields FROM anomalies ORDER BY greatest(score, coalesce(qname_score, 0)) DESC"
	$(BIN)/portprint sql --warehouse $(DEMO)/warehouse --limit 8 \
	  "SELECT date, detector, src_ip, dst_ip, round(qname_score, 2) AS qscore, qtype, substr(qname, 1, 50) AS qname FROM anomalies WHERE detector IN ('qname-model', 'tunnel') ORDER BY date, src_ip"
	$(BIN)/portprint sql --warehouse $(DEMO)/warehouse \
	  "SELECT date, flows_read, flows_scored, anomalies, rule_flagged, model_flagged, qname_flagged, tunnel_flagged, writer, round(seconds, 1) AS seconds FROM runs WHERE status = 'succeeded' ORDER BY date, logged_at"
	$(BIN)/portprint report --warehouse $(DEMO)/warehouse --out $(DEMO)/report
	@echo "Tables (Delta): $(DEMO)/warehouse/anomalies and $(DEMO)/warehouse/runs; model card: $(DEMO)/model/MODEL_CARD.md"
	@echo "Report: $(DEMO)/report/report.html (and report.md beside it)"

test: check-java $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: check-java $(BIN)/.installed
	$(BIN)/python benchmarks/score_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache
