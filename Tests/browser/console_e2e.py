#!/usr/bin/env python3
"""The console's flows in a real browser (Debian's chromium, headless, through chromium-driver and selenium).

Run by Tests/ReplicationTests/ConsoleBrowserTests.swift against a running server that has a machine `web` with
two recovery points, a command launcher and the users admin, olga (operator), dave (decider), ann (analyst).
Usage: console_e2e.py URL SERVER_CERT_PEM ARTIFACT_DIR EARLIER_POINT_ID PASSWORD_SUFFIX
Exits 0 when every flow passed; prints what it checked.
"""
import base64, hashlib, os, subprocess, sys, time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL, CERT, ARTIFACTS, EARLIER, SUFFIX = sys.argv[1:6]
os.makedirs(ARTIFACTS, exist_ok=True)


def spki_hash(path):
    """Chromium trusts exactly this certificate's key (no blanket 'ignore certificate errors')."""
    public = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", path], check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=public, check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def browser(width=1280, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
                f"--ignore-certificate-errors-spki-list={spki_hash(CERT)}", "--user-data-dir=" + os.path.join(ARTIFACTS, f"profile-{time.time_ns()}")]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def shot(driver, name):
    path = os.path.join(ARTIFACTS, name + ".png")
    driver.save_screenshot(path)
    print("screenshot:", path)


def wait(driver, seconds=20):
    return WebDriverWait(driver, seconds)


def login(driver, user):
    driver.get(URL + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(user + SUFFIX)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    wait(driver).until(EC.presence_of_element_located((By.ID, "machines")))
    check(user in driver.find_element(By.CSS_SELECTOR, "header .who").text, f"{user} is logged in")


def logout(driver):
    driver.find_element(By.CSS_SELECTOR, "header .who button").click()
    wait(driver).until(EC.presence_of_element_located((By.ID, "password")))


def row(driver, machine):
    return driver.find_element(By.CSS_SELECTOR, f"tr[data-machine='{machine}']")


def open_launch(driver, mode_id):
    driver.get(URL + "/machines")
    box = row(driver, "web").find_element(By.CSS_SELECTOR, "input[name=machine]")
    box.click()
    check(box.is_selected(), "the machine is selected")
    button = driver.find_element(By.ID, "launch-button")
    wait(driver).until(lambda d: button.is_enabled())
    button.click()
    item = wait(driver).until(EC.visibility_of_element_located((By.ID, mode_id)))
    return item


def continue_launch(driver, point_value):
    dialog = wait(driver).until(EC.visibility_of_element_located((By.ID, "point-dialog")))
    radio = wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, f"#point-list input[value='{point_value}']")))
    radio.click()
    return dialog


def wait_job(driver, expected="LAUNCHED"):
    wait(driver).until(EC.presence_of_element_located((By.ID, "job-status")))
    check(driver.current_url.startswith(URL + "/jobs/"), "Continue with launch leads to the job page")
    job = driver.current_url.rsplit("/", 1)[1]
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "job-status").text == "COMPLETED")
    WebDriverWait(driver, 10).until(lambda d: expected in d.find_element(By.CSS_SELECTOR, "[data-item-status]").text)
    check(expected in driver.find_element(By.CSS_SELECTOR, "[data-item-status]").text, f"job {job} completes: {expected}")
    return job


def operator_drill():
    d = browser()
    try:
        login(d, "olga")
        test = open_launch(d, "menu-test")
        recovery = d.find_element(By.ID, "menu-recovery")
        check(not recovery.is_enabled(), "Recovery Mode is not offered without an open incident")
        check("open incident" in d.find_element(By.ID, "recovery-note").text, "the menu says an open incident is needed")
        test.click()
        continue_launch(d, EARLIER)
        labels = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#point-list label")]
        check(labels and labels[0].startswith("Latest"), "the latest point comes first in Choose recovery point")
        check(len(labels) >= 2, f"earlier points follow ({len(labels)} listed)")
        shot(d, "choose-recovery-point")
        d.find_element(By.ID, "point-continue").click()
        job = wait_job(d)
        d.get(URL + "/machines")
        web = row(d, "web")
        check(len(web.find_elements(By.CSS_SELECTOR, ".status.drill")) == 1, "the machine shows purple while its Test-mode instance runs")
        color = web.find_element(By.CSS_SELECTOR, ".status.drill").value_of_css_property("color")
        check(color in ("rgba(123, 63, 191, 1)", "rgb(123, 63, 191)"), f"the drill status is purple ({color})")
        check("Test instance running" in web.text, "the purple status has text, not colour alone")
        check("Tested recently" in web.text, "the DR lifecycle says Tested recently")
        shot(d, "machines")
        # The same page on a phone-sized screen.
        d.set_window_size(390, 844)
        d.get(URL + "/machines")
        overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        check(overflow <= 1, f"no sideways scrolling on a phone-sized screen (overflow {overflow}px)")
        shot(d, "machines-phone")
        d.set_window_size(1280, 900)
        # Terminate the drill's instance.
        d.get(URL + "/instances")
        d.find_element(By.CSS_SELECTOR, "#instances button.danger").click()
        wait_job(d, "TERMINATED")
        d.get(URL + "/machines")
        check(len(row(d, "web").find_elements(By.CSS_SELECTOR, ".status.drill")) == 0, "after terminate the machine is no longer purple")
        check("Tested recently" in row(d, "web").text, "and stays Tested recently")
        # The menu and the dialog by keyboard alone.
        box = row(d, "web").find_element(By.CSS_SELECTOR, "input[name=machine]")
        box.send_keys(Keys.SPACE)
        button = d.find_element(By.ID, "launch-button")
        button.send_keys(Keys.ENTER)
        wait(d).until(lambda x: x.switch_to.active_element.get_attribute("id") == "menu-test")
        d.switch_to.active_element.send_keys(Keys.ENTER)
        wait(d).until(EC.visibility_of_element_located((By.ID, "point-dialog")))
        wait(d).until(lambda x: x.switch_to.active_element.get_attribute("type") == "radio")
        check(True, "the keyboard opens the menu and the dialog, with focus on the first point")
        d.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait(d).until(EC.invisibility_of_element_located((By.ID, "point-dialog")))
        check(True, "Escape closes the dialog")
        logout(d)
        return job
    finally:
        d.quit()


def decider_declares():
    d = browser()
    try:
        login(d, "dave")
        check(len(d.find_elements(By.ID, "launch-button")) == 0, "a decider is not offered launches")
        d.get(URL + "/incidents")
        d.find_element(By.ID, "title").send_keys("ransomware on web")
        d.find_element(By.CSS_SELECTOR, "form[action='/console/incidents'] button").click()
        wait(d).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".flash.ok")))
        check("Declared inc-" in d.find_element(By.CSS_SELECTOR, ".flash.ok").text, "the decider declared an incident")
        logout(d)
    finally:
        d.quit()


def operator_recovers():
    d = browser()
    try:
        login(d, "olga")
        recovery = open_launch(d, "menu-recovery")
        check(recovery.is_enabled(), "with an open incident Recovery Mode is offered")
        check("Under incident inc-" in d.find_element(By.ID, "recovery-note").text, "the menu names the incident")
        recovery.click()
        continue_launch(d, "latest")
        d.find_element(By.ID, "point-continue").click()
        job = wait_job(d)
        check("under incident inc-" in d.find_element(By.CSS_SELECTOR, "main .card").text, "the recovery job is under the incident")
        logout(d)
        return job
    finally:
        d.quit()


def analyst_reads():
    d = browser()
    try:
        login(d, "ann")
        check(len(d.find_elements(By.ID, "launch-button")) == 0, "an analyst is not offered launches")
        nav = d.find_element(By.CSS_SELECTOR, "header nav").text
        for section in ["Machines", "Jobs", "Recovery instances", "Applications", "Incidents", "Users and roles", "Audit log", "Settings"]:
            check(section in nav, f"an analyst sees {section}")
        d.get(URL + "/instances")
        check(len(d.find_elements(By.CSS_SELECTOR, "#instances button.danger")) == 0, "an analyst is not offered terminate")
        check("RECOVERY" in d.find_element(By.ID, "instances").text or "Recovery" in d.find_element(By.ID, "instances").text, "an analyst sees the recovery instance")
        d.get(URL + "/audit")
        check("Hash chain intact" in d.find_element(By.TAG_NAME, "main").text, "the audit page shows the chain intact")
        check("POST /console/launch" in d.find_element(By.TAG_NAME, "main").text, "console launches are in the audit log")
        # The server enforces: a launch forged with the analyst's own session and CSRF token is refused.
        status = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const csrf = document.querySelector("input[name=csrf]").value;
            const body = new URLSearchParams({csrf, mode: "TEST", machine: "web"});
            fetch("/console/launch", {method: "POST", body, redirect: "manual"}).then(r => done(r.status), e => done(String(e)));""")
        check(status == 403, f"a forged launch by the analyst is refused ({status})")
        d.get(URL + "/incidents")
        notes = d.find_elements(By.CSS_SELECTOR, "form[action$='/notes'] textarea")
        check(len(notes) >= 1, "an analyst may write notes and reports")
        logout(d)
    finally:
        d.quit()


drill = operator_drill()
decider_declares()
recovery = operator_recovers()
analyst_reads()
print(f"console-e2e: passed (drill {drill}, recovery {recovery})")
