// Keeps the server-written "41 h 12 min left" / "overdue by 3 h" texts current while the page
// stays open. Without it the page shows the same text, as of when it was loaded.
"use strict";

(() => {
  const span = (seconds) => {
    const minutes = Math.floor(Math.max(0, seconds) / 60);
    const hours = Math.floor(minutes / 60);
    if (hours === 0) return `${minutes} min`;
    if (hours < 100) return `${hours} h ${minutes % 60} min`;
    return `${Math.floor(hours / 24)} days ${hours % 24} h`;
  };
  const tick = () => {
    for (const element of document.querySelectorAll(".countdown[data-deadline]")) {
      const left = (Date.parse(element.dataset.deadline) - Date.now()) / 1000;
      element.textContent = left >= 0 ? `${span(left)} left` : `overdue by ${span(-left)}`;
      if (left < 0 && element.dataset.state !== "overdue") {
        element.dataset.state = "overdue";
        element.classList.replace("status-active", "status-expired");
      }
    }
  };
  tick();
  window.setInterval(tick, 30000);
})();
