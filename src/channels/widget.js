/*
 * Custodian web chat widget. Embed on any page:
 *   <script src="https://YOUR-HOST/widget.js" data-inbox="INBOX-ID" async></script>
 * Optional identity verification (the HMAC is computed on your server):
 *   data-user-id="42" data-user-hash="hex HMAC-SHA256(identity secret, user id)" data-user-name="Ana"
 * The page's origin must be one of the inbox's allowed origins.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.inbox) { return; }
  var inbox = script.dataset.inbox;
  var base = new URL(script.src).origin;
  var api = base + "/api/v1/webchat/" + encodeURIComponent(inbox);
  var storeKey = "custodian-chat:" + inbox;
  var token = null;
  var source = null;
  var seen = {};
  var started = null;

  function uuid() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }

  function el(tag, style, text) {
    var node = document.createElement(tag);
    if (style) { node.setAttribute("style", style); }
    if (text) { node.textContent = text; }
    return node;
  }

  var root = el("div", "position:fixed;bottom:20px;right:20px;z-index:2147483000;font:14px/1.4 system-ui,sans-serif");
  var panel = el("div", "display:none;width:320px;height:420px;background:#fff;border:1px solid #ccd;border-radius:12px;box-shadow:0 8px 24px rgba(0,0,0,.15);flex-direction:column;overflow:hidden;margin-bottom:10px");
  var header = el("div", "padding:10px 14px;background:#1d3557;color:#fff;font-weight:600", "Chat with us");
  var list = el("div", "flex:1;overflow-y:auto;padding:10px;background:#f7f8fa");
  list.setAttribute("aria-live", "polite");
  var form = el("form", "display:flex;border-top:1px solid #e3e5ea");
  var input = el("input", "flex:1;border:0;padding:10px;font:inherit;outline:none");
  input.setAttribute("placeholder", "Type a message");
  input.setAttribute("aria-label", "Message");
  var sendButton = el("button", "border:0;background:#1d3557;color:#fff;padding:0 14px;cursor:pointer", "Send");
  form.appendChild(input);
  form.appendChild(sendButton);
  panel.appendChild(header);
  panel.appendChild(list);
  panel.appendChild(form);
  var bubble = el("button", "width:56px;height:56px;border-radius:50%;border:0;background:#1d3557;color:#fff;font-size:24px;cursor:pointer;float:right", "\u{1F4AC}");
  bubble.setAttribute("aria-label", "Open chat");
  root.appendChild(panel);
  root.appendChild(bubble);

  function show(message) {
    if (seen[message.id]) { return; }
    seen[message.id] = true;
    var mine = message.direction === "inbound";
    var row = el("div", "display:flex;margin:4px 0;justify-content:" + (mine ? "flex-end" : "flex-start"));
    var text = el("div", "max-width:80%;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word;" +
      (mine ? "background:#1d3557;color:#fff" : "background:#fff;border:1px solid #e3e5ea"), message.body);
    row.appendChild(text);
    list.appendChild(row);
    list.scrollTop = list.scrollHeight;
  }

  function request(method, path, body) {
    var headers = { "content-type": "application/json" };
    if (token) { headers["x-webchat-session"] = token; }
    return fetch(api + path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined })
      .then(function (r) {
        return r.json().then(function (data) {
          if (r.status === 401 && path !== "/sessions") {
            // The session expired or was revoked: the next open starts a new one.
            localStorage.removeItem(storeKey);
            token = null;
            started = null;
            if (source) { source.close(); source = null; }
          }
          if (!r.ok) { throw new Error((data.error && data.error.message) || r.statusText); }
          return data;
        });
      });
  }

  function start() {
    var body = { session_token: localStorage.getItem(storeKey) || undefined };
    if (script.dataset.userId) {
      body.user_id = script.dataset.userId;
      body.user_hash = script.dataset.userHash;
    }
    if (script.dataset.userName) { body.name = script.dataset.userName; }
    return request("POST", "/sessions", body).then(function (session) {
      token = session.session_token;
      localStorage.setItem(storeKey, token);
      return request("GET", "/messages");
    }).then(function (data) {
      data.messages.forEach(show);
      source = new EventSource(api + "/events?session=" + encodeURIComponent(token));
      source.addEventListener("message", function (e) { show(JSON.parse(e.data)); });
      function reread() {
        request("GET", "/messages").then(function (d) { d.messages.forEach(show); }).catch(function () {});
      }
      // The stream fell behind and lost replies: read the conversation again.
      source.addEventListener("resync", reread);
      // The server ends every stream after a while and the browser reconnects: replies sent
      // in between came on no stream.
      var opened = false;
      source.addEventListener("open", function () {
        if (opened) { reread(); }
        opened = true;
      });
    });
  }

  bubble.addEventListener("click", function () {
    var open = panel.style.display === "none";
    panel.style.display = open ? "flex" : "none";
    if (open && !started) {
      started = start().catch(function (e) { show({ id: uuid(), direction: "outbound", body: "Chat unavailable: " + e.message }); started = null; });
    }
    if (open) { input.focus(); }
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || !token) { return; }
    input.value = "";
    var clientId = uuid();
    request("POST", "/messages", { body: text, client_message_id: clientId }).then(function (r) {
      show({ id: r.id || clientId, direction: "inbound", body: text });
    }).catch(function (err) { show({ id: uuid(), direction: "outbound", body: "Not sent: " + err.message }); });
  });

  window.CustodianChat = {
    open: function () { if (panel.style.display === "none") { bubble.click(); } },
    close: function () { panel.style.display = "none"; }
  };
  (document.body || document.documentElement).appendChild(root);
})();
