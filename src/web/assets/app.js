// Custodian staff web app: keyboard shortcuts and focus handling. Everything works without it;
// it only makes the pages quicker to use. Loaded after htmx (all scripts are deferred, in order).
(function () {
  "use strict";

  // Belt and braces with the htmx-config meta tag: no injected styles, no eval, no scripts from
  // swapped content (the pages' CSP would refuse them anyway).
  if (window.htmx) {
    htmx.config.includeIndicatorStyles = false;
    htmx.config.allowEval = false;
    htmx.config.allowScriptTags = false;
    htmx.config.selfRequestsOnly = true;
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-row]"));
  }

  function move(step) {
    var all = rows();
    if (all.length === 0) return;
    var at = all.indexOf(document.activeElement);
    var next = at === -1 ? (step > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, at + step));
    all[next].focus();
  }

  function showShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (dialog && !dialog.open) dialog.showModal();
  }

  // The AI's draft goes into the composer in place (without JavaScript the button reloads the
  // page with the draft in it); the reply then carries the draft's id.
  function insertDraft(reviewId) {
    var text = document.querySelector("[data-draft-text]");
    var body = document.querySelector("[data-reply-body]");
    var id = document.querySelector("[data-draft-id]");
    if (!text || !body || !id) return false;
    body.value = text.textContent;
    id.value = reviewId;
    body.focus();
    return true;
  }

  function press(selector) {
    var button = document.querySelector(selector);
    if (button && !button.disabled) button.click();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-show-shortcuts]");
    if (button) showShortcuts();
    var insert = event.target.closest && event.target.closest("[data-insert-draft]");
    if (insert && insertDraft(insert.getAttribute("data-insert-draft"))) event.preventDefault();
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    switch (event.key) {
      case "/": {
        var search = document.querySelector("[data-search]");
        if (search) {
          event.preventDefault();
          search.focus();
          search.select();
        }
        break;
      }
      case "?": {
        event.preventDefault();
        showShortcuts();
        break;
      }
      case "j":
        move(1);
        break;
      case "k":
        move(-1);
        break;
      case "r":
      case "n": {
        // Reply or note: the composer, focused; the note's button becomes the default.
        var body = document.querySelector("[data-reply-body]");
        if (!body) return;
        event.preventDefault();
        var composer = body.form;
        composer.classList.toggle("note", event.key === "n");
        composer.setAttribute("data-mode", event.key === "n" ? "note" : "reply");
        body.focus();
        break;
      }
      case "e":
        press("[data-resolve]");
        break;
      case "s": {
        var snooze = document.querySelector("[data-snooze]");
        if (snooze) {
          event.preventDefault();
          snooze.focus();
        }
        break;
      }
      case "u":
        press("[data-back]");
        break;
      default:
        return;
    }
  });

  // Ctrl+Enter (or Cmd+Enter) in the composer sends it: a note after "n", else a reply.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    var body = event.target.closest && event.target.closest("[data-reply-body]");
    if (!body) return;
    event.preventDefault();
    var note = body.form.getAttribute("data-mode") === "note";
    press(note ? "[data-send-note]" : "[data-send-reply]");
  });

  // A filter that changes submits its form (the button stays for use without JavaScript).
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.matches && field.matches("[data-autosubmit]") && field.form) {
      field.form.requestSubmit();
    }
  });

  // Canned replies: "/" and a shortcut in the composer lists the matching ones (arrows pick,
  // Enter or Tab inserts, Escape closes); "Insert" puts the chosen one at the cursor. Without
  // JavaScript "Insert" reloads the page with the reply in the composer.
  function cannedList() {
    return document.querySelector("[data-canned-list]");
  }
  function slashQuery(body) {
    var before = body.value.slice(0, body.selectionStart);
    var m = /(^|\s)\/([a-z0-9_-]*)$/.exec(before);
    return m ? { query: m[2], start: before.length - m[2].length - 1 } : null;
  }
  function cannedOptions(list) {
    return Array.prototype.filter.call(list.querySelectorAll("[data-shortcut]"), function (li) {
      return !li.hidden;
    });
  }
  function cannedActive(list, li) {
    Array.prototype.forEach.call(list.querySelectorAll("[data-shortcut]"), function (x) {
      x.setAttribute("aria-selected", x === li ? "true" : "false");
    });
    var body = document.querySelector("[data-reply-body]");
    if (body) {
      if (li) body.setAttribute("aria-activedescendant", li.id);
      else body.removeAttribute("aria-activedescendant");
    }
  }
  function closeCanned() {
    var list = cannedList();
    if (list && !list.hidden) {
      list.hidden = true;
      cannedActive(list, null);
    }
  }
  function insertAt(body, start, end, text) {
    body.value = body.value.slice(0, start) + text + body.value.slice(end);
    var caret = start + text.length;
    body.setSelectionRange(caret, caret);
    body.focus();
  }
  function useCanned(body, li) {
    var found = slashQuery(body);
    var start = found ? found.start : body.selectionStart;
    insertAt(body, start, body.selectionStart, li.getAttribute("data-text"));
    closeCanned();
  }
  document.addEventListener("input", function (event) {
    var body = event.target.closest && event.target.closest("[data-reply-body]");
    var list = cannedList();
    if (!body || !list) return;
    var found = slashQuery(body);
    if (!found) {
      closeCanned();
      return;
    }
    var first = null;
    Array.prototype.forEach.call(list.querySelectorAll("[data-shortcut]"), function (li) {
      li.hidden = li.getAttribute("data-shortcut").indexOf(found.query) !== 0;
      if (!li.hidden && !first) first = li;
    });
    list.hidden = !first;
    cannedActive(list, first);
  });
  document.addEventListener("keydown", function (event) {
    var body = event.target.closest && event.target.closest("[data-reply-body]");
    var list = cannedList();
    if (!body || !list || list.hidden) return;
    var options = cannedOptions(list);
    var at = options.indexOf(list.querySelector('[aria-selected="true"]'));
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      var step = event.key === "ArrowDown" ? 1 : -1;
      cannedActive(list, options[(at + step + options.length) % options.length]);
    } else if ((event.key === "Enter" || event.key === "Tab") && !event.ctrlKey && !event.metaKey && at !== -1) {
      event.preventDefault();
      event.stopImmediatePropagation();
      useCanned(body, options[at]);
    } else if (event.key === "Escape") {
      event.preventDefault();
      closeCanned();
    }
  }, true);
  document.addEventListener("mousedown", function (event) {
    var li = event.target.closest && event.target.closest("[data-canned-list] [data-shortcut]");
    var body = document.querySelector("[data-reply-body]");
    if (li && body) {
      event.preventDefault();
      useCanned(body, li);
    }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-insert-canned]");
    var body = document.querySelector("[data-reply-body]");
    var select = button && button.form && button.form.querySelector("select");
    if (!button || !body || !select) return;
    var li = document.querySelector('[data-canned-id="' + select.value + '"]');
    if (!li) return;
    event.preventDefault();
    insertAt(body, body.selectionStart, body.selectionEnd, li.getAttribute("data-text"));
  });

  // The live connection's state, for the reader (and for tests waiting for it).
  function liveState(text, state) {
    var el = document.querySelector("[data-live-state]");
    if (el) {
      el.textContent = text;
      el.setAttribute("data-live-state", state);
    }
  }
  document.addEventListener("htmx:sseOpen", function () {
    liveState("Live", "open");
    // What changed between the page's rendering and the stream's opening was announced to
    // nobody: the live parts fetch themselves once to catch up.
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-refresh]"), function (el) {
      htmx.trigger(el, "liveopen");
    });
  });
  document.addEventListener("htmx:sseError", function () {
    liveState("Reconnecting…", "error");
  });

  // After a live refresh, keep the keyboard focus on the row it was on.
  var focusedRow = null;
  document.addEventListener("htmx:beforeSwap", function () {
    var active = document.activeElement;
    focusedRow = active && active.hasAttribute && active.hasAttribute("data-row") ? active.getAttribute("href") : null;
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!focusedRow) return;
    var again = document.querySelector('[data-row][href="' + focusedRow + '"]');
    if (again) again.focus();
    focusedRow = null;
  });
})();
