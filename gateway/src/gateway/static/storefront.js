// The storefront's little JavaScript: the order page follows its order and then its delivery
// live, and a form is not sent twice by a double click. Every page works without it.
(function () {
  "use strict";

  var STEPS = ["placed", "reserving", "authorizing", "completing"];
  // As STEP_WORDS in gateway/storefront/models.py.
  var WORDS = { done: "done", current: "in progress", todo: "to come", skipped: "not reached" };

  // The same rule as step_states() in gateway/storefront/models.py.
  function stepStates(status, step) {
    var states = {};
    var at = STEPS.indexOf(step);
    if (at < 0) at = step === "done" ? STEPS.length : 1;
    STEPS.forEach(function (name, i) {
      if (status === "CONFIRMED") states[name] = "done";
      else if (status === "CANCELLED" || step === "compensating")
        states[name] = name === "placed" ? "done" : "skipped";
      else states[name] = i < at ? "done" : i === at ? "current" : "todo";
    });
    return states;
  }

  function followOrder(root) {
    var url = root.getAttribute("data-order-live");
    if (!url || !window.EventSource) return;
    var reasons = {};
    try {
      reasons = JSON.parse(root.getAttribute("data-reasons") || "{}");
    } catch (ignored) {}
    var general = root.getAttribute("data-general-reason") || "";
    var badge = root.querySelector("[data-testid=order-status]");
    var reason = root.querySelector("[data-testid=cancel-reason]");
    var note = root.querySelector("[data-testid=live-note]");
    var delivery = root.querySelector("[data-testid=delivery]");
    var finished = false;

    function part(name) {
      return delivery.querySelector("[data-testid=" + name + "]");
    }

    // A `shipment` event: the delivery as the gateway words it (gateway/storefront/models.py's
    // Delivery). True once nothing will change any more.
    function showDelivery(shipped) {
      if (!delivery) return true;
      var state = String(shipped.state || "");
      delivery.setAttribute("data-delivery-state", state);
      if (state === "none") {
        delivery.hidden = true;
        return true;
      }
      var words = part("delivery-note");
      words.textContent = shipped.note || "";
      words.hidden = !shipped.note;
      var facts = part("shipment");
      if (state === "shipped") {
        var status = part("shipment-status");
        status.textContent = shipped.status_text || "";
        status.setAttribute("data-status", shipped.status || "");
        part("shipment-carrier").textContent = shipped.carrier || "";
        part("tracking-number").textContent = shipped.tracking_number || "";
        facts.hidden = false;
      } else if (state === "awaiting") {
        facts.hidden = true;
      } // unavailable: what was shown stays, under the note
      if (shipped.final) delivery.setAttribute("data-delivery-final", "");
      return Boolean(shipped.final);
    }

    function show(order) {
      var status = String(order.status || "");
      var step = order.checkout ? String(order.checkout.step || "") : "";
      badge.textContent = status;
      badge.className = "badge badge-" + status.toLowerCase();
      if (status === "CANCELLED") {
        reason.textContent = reasons[order.reason] || general;
        reason.hidden = false;
      } else {
        reason.hidden = true;
      }
      var states = stepStates(status, step);
      STEPS.forEach(function (name) {
        var item = root.querySelector("[data-step=" + name + "]");
        if (!item) return;
        item.className = "step step-" + states[name];
        var text = item.querySelector(".step-state");
        if (text) text.textContent = "(" + WORDS[states[name]] + ")";
      });
      // A cancelled order ships nothing; a confirmed one's delivery follows on the stream.
      if (status === "CANCELLED" && delivery) delivery.hidden = true;
      return status === "CANCELLED";
    }

    var initial = badge ? badge.textContent.trim() : "";
    var delivered = !delivery || delivery.hasAttribute("data-delivery-final");
    if (initial === "CANCELLED" || (initial === "CONFIRMED" && delivered)) return; // settled

    var source = new EventSource(url);
    function follow(name, redraw) {
      source.addEventListener(name, function (event) {
        var data;
        try {
          data = JSON.parse(event.data);
        } catch (ignored) {
          return;
        }
        if (redraw(data)) {
          finished = true;
          source.close();
        }
      });
    }
    follow("status", show);
    follow("shipment", showDelivery);
    source.onerror = function () {
      // The browser reconnects by itself while it can; when it gives up, say so.
      if (!finished && source.readyState === EventSource.CLOSED) {
        note.textContent = "Live updates stopped; reload the page to see the latest status.";
        note.hidden = false;
      }
    };
  }

  function guardDoubleSubmit(form) {
    form.addEventListener("submit", function () {
      var buttons = form.querySelectorAll("button[type=submit]");
      // Disabled after this turn, so the button's own value is still sent.
      window.setTimeout(function () {
        buttons.forEach(function (button) {
          button.disabled = true;
        });
      }, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-order-live]").forEach(followOrder);
    document.querySelectorAll("form.checkout-form").forEach(guardDoubleSubmit);
  });
})();
