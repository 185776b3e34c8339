// berth's dashboard: follows an app's live logs (server-sent events) into
// the #live-logs list, with the filters of the form above it. Lines are
// added as text, never as HTML.
(function () {
  "use strict";
  var list = document.getElementById("live-logs");
  var form = document.getElementById("log-filters");
  if (!list || !form) { return; }
  var source = null;
  function follow() {
    if (source) { source.close(); }
    var query = new URLSearchParams(new FormData(form));
    query.delete("csrf");
    source = new EventSource(list.dataset.stream + "?" + query.toString());
    source.onopen = function () { list.dataset.state = "open"; };
    source.onmessage = function (event) {
      var line = JSON.parse(event.data);
      var item = document.createElement("li");
      item.className = "log " + (line.level || "plain");
      var text = line.at + " " + line.instance + " " +
        (line.level ? line.level.toUpperCase() + " " : "") + line.message;
      if (line.fields) {
        Object.keys(line.fields).forEach(function (key) {
          var value = line.fields[key];
          text += " " + key + "=" + (typeof value === "string" ? value : JSON.stringify(value));
        });
      }
      item.textContent = text;
      list.appendChild(item);
      while (list.children.length > 500) { list.removeChild(list.firstChild); }
      list.scrollTop = list.scrollHeight;
    };
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    list.textContent = "";
    follow();
  });
  follow();
})();
