"""`make test` hands the session platform's files to one xdist worker as one unit (tests/conftest.py). The
controller that hands out the units sees only test ids, so it decides by reading each file; this holds that
reading to pytest's own fixture closure, so that no file starts a second session platform on the other worker."""

from __future__ import annotations

from tests.conftest import SESSION_PLATFORM_UNIT, _work_unit


def test_every_file_whose_tests_use_the_session_platform_is_in_its_unit(request):
    root = request.config.rootpath
    users = {str(item.path.relative_to(root)) for item in request.session.items if "platform" in item.fixturenames}
    assert {path for path in users if _work_unit(path) != SESSION_PLATFORM_UNIT} == set()
    here = str(request.path.relative_to(root))  # a file that does not use it stays a unit of its own
    assert _work_unit(here) == here
