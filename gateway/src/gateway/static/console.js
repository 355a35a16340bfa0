// The operations console: redraws each section from /console/api/* every few seconds.
// The numbers come written out by the server ("1.2/s", "3 h 12 min"); this only builds
// elements, always through textContent and attributes, never HTML strings.
(function () {
  "use strict";

  const PERIOD_MS = 2000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const status = document.getElementById("console-status");
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  let tick = 0;

  function make(namespace, tag, attributes, children) {
    const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(name, String(value));
      }
    }
    for (const child of children || []) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const h = (tag, attributes, children) => make(null, tag, attributes, children);
  const s = (tag, attributes, children) => make(SVG_NS, tag, attributes, children);

  function replace(id, children) {
    const target = document.getElementById(id);
    if (target) {
      target.replaceChildren(...children);
    }
  }

  function emptyRow(columns, text) {
    return h("tr", { class: "empty" }, [h("td", { colspan: columns }, [text])]);
  }

  async function load(path) {
    const reply = await fetch(path, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
    const type = reply.headers.get("content-type") || "";
    if (reply.redirected || !type.includes("application/json")) {
      throw new Error("signed out: reload the page to log in again");
    }
    if (!reply.ok) {
      throw new Error("the console answered " + reply.status);
    }
    return reply.json();
  }

  function drawServices(body) {
    replace(
      "services-body",
      body.services.map((row) =>
        h(
          "tr",
          {
            "data-testid": "service-row",
            "data-service": row.service,
            "data-replica": row.replica,
            "data-health": row.health,
            class: "health-" + row.health,
          },
          [
            h("td", {}, [row.service]),
            h("td", {}, ["#" + row.replica]),
            h("td", {}, [h("span", { class: "health" }, [row.shown.health])]),
            h("td", {}, [row.shown.version]),
            h("td", {}, [row.shown.uptime]),
            h("td", { class: "num" }, [row.shown.request_rate]),
            h("td", { class: "num" }, [row.shown.error_rate]),
            h("td", { class: "num" }, [row.shown.p99]),
          ],
        ),
      ),
    );
  }

  function drawMap(body) {
    const map = document.getElementById("service-map");
    if (!map) {
      return;
    }
    map.setAttribute("viewBox", "0 0 " + body.width + " " + body.height);
    const edges = map.querySelector("g.edges");
    const nodes = map.querySelector("g.nodes");
    edges.replaceChildren(
      ...body.edges.map((edge) =>
        s(
          "g",
          {
            class: "edge edge-" + edge.kind + (edge.active ? " active" : " idle"),
            "data-edge": edge.source + "->" + edge.target,
            "data-kind": edge.kind,
            "data-rate": edge.rate === null ? "" : edge.rate,
          },
          [
            s("path", { d: edge.path, "marker-end": "url(#arrow-" + edge.kind + ")" }, [
              s("title", {}, [edge.source + " → " + edge.target + " (" + edge.kind + "): " + edge.label]),
            ]),
            s("text", { x: edge.label_x, y: edge.label_y, "text-anchor": "middle" }, [edge.label]),
          ],
        ),
      ),
    );
    nodes.replaceChildren(
      ...body.nodes.map((node) =>
        s("g", { class: "node health-" + node.health, "data-node": node.name, "data-health": node.health }, [
          s("rect", {
            x: node.x,
            y: node.y,
            width: body.node_width,
            height: body.node_height,
            rx: 6,
            stroke: node.colour,
          }),
          s("text", { x: node.x + body.node_width / 2, y: node.y + body.node_height / 2 + 5, "text-anchor": "middle" }, [
            node.name,
          ]),
        ]),
      ),
    );
  }

  function unreadable(list) {
    if (!list.length) {
      return "";
    }
    return "Not read: " + list.map((r) => r.service + "#" + r.replica + " (" + r.error + ")").join(", ") + ".";
  }

  function drawTraces(body) {
    const rows = body.traces.map((trace) =>
      h(
        "tr",
        {
          "data-testid": "trace-row",
          "data-trace": trace.trace_id,
          "data-error": trace.error ? "true" : "false",
          class: trace.error ? "error" : null,
        },
        [
          h("td", {}, [h("a", { href: "/console/traces/" + encodeURIComponent(trace.trace_id) }, [trace.shown.start])]),
          h("td", {}, trace.error ? [trace.root + " ", h("span", { class: "badge-error" }, ["error"])] : [trace.root]),
          h("td", {}, [trace.shown.services]),
          h("td", { class: "num" }, [trace.shown.duration]),
          h("td", { class: "num" }, [trace.spans]),
        ],
      ),
    );
    replace("traces-body", rows.length ? rows : [emptyRow(5, "No traces kept yet.")]);
    replace("traces-unreachable", [unreadable(body.unreachable)]);
  }

  function drawOutbox(body) {
    replace(
      "outbox-body",
      body.outboxes.map((row) =>
        h(
          "tr",
          {
            "data-testid": "outbox-row",
            "data-service": row.service,
            "data-replica": row.replica,
            "data-pending": row.pending === null ? "" : row.pending,
            class: row.pending ? "backlog" : null,
          },
          [
            h("td", {}, [row.service]),
            h("td", {}, ["#" + row.replica]),
            h("td", {}, [row.shown.state]),
            h("td", { class: "num" }, [row.shown.oldest]),
          ],
        ),
      ),
    );
  }

  function drawDeadLetters(body) {
    const broker = document.getElementById("dead-letters-broker");
    if (broker) {
      broker.textContent = body.broker.detail;
      broker.setAttribute("data-broker", body.broker.state);
    }
    const rows = body.dead_letters.map((letter) =>
      h("tr", { "data-testid": "dead-letter", "data-event-id": letter.id }, [
        h("td", {}, [letter.shown.time]),
        h("td", {}, [letter.service + " / " + letter.consumer]),
        h("td", {}, [h("code", {}, [letter.original_subject])]),
        h("td", { class: "wrap" }, [letter.error]),
        h("td", { class: "num" }, [letter.delivered]),
        h("td", {}, [
          h("form", { method: "post", action: "/console/dead-letters/" + encodeURIComponent(letter.id) + "/replay" }, [
            h("input", { type: "hidden", name: "csrf_token", value: csrf }),
            h("button", { type: "submit", "data-testid": "replay" }, ["Replay"]),
          ]),
        ]),
      ]),
    );
    replace("dead-letters-body", rows.length ? rows : [emptyRow(6, "No dead letters.")]);
  }

  function drawEvents(body) {
    const broker = document.getElementById("events-broker");
    if (broker) {
      broker.textContent = body.broker;
    }
    const items = body.events.map((event) =>
      h("li", { "data-testid": "event", "data-type": event.type, "data-kind": event.kind }, [
        h("span", { class: "when" }, [event.shown.received]),
        " ",
        h("strong", { class: "type" }, [event.type]),
        " ",
        h("span", { class: "about" }, [event.aggregate || ""]),
        " ",
        h("code", { class: "subject" }, [event.subject]),
        " ",
        h("span", { class: "summary muted" }, [event.summary]),
      ]),
    );
    replace("events-body", items.length ? items : [h("li", { class: "empty" }, ["No messages seen since the gateway started."])]);
  }

  async function refresh() {
    tick += 1;
    // Services, the map and events every round; the heavier reads every other one.
    const jobs = [
      load("/console/api/services").then(drawServices),
      load("/console/api/map").then(drawMap),
      load("/console/api/events").then(drawEvents),
    ];
    if (tick % 2 === 0) {
      jobs.push(
        load("/console/api/traces").then(drawTraces),
        load("/console/api/outbox").then(drawOutbox),
        load("/console/api/dead-letters").then(drawDeadLetters),
      );
    }
    const results = await Promise.allSettled(jobs);
    const failed = results.find((result) => result.status === "rejected");
    if (status) {
      status.textContent = failed
        ? "Could not refresh: " + failed.reason.message
        : "Refreshed " + new Date().toLocaleTimeString() + "; again in 2 s.";
      status.classList.toggle("stale", Boolean(failed));
    }
  }

  async function loop() {
    if (!document.hidden) {
      try {
        await refresh();
      } catch (error) {
        if (status) {
          status.textContent = "Could not refresh: " + error.message;
        }
      }
    }
    window.setTimeout(loop, PERIOD_MS);
  }

  if (document.getElementById("services-body")) {
    window.setTimeout(loop, PERIOD_MS);
  }
})();
