from api.upload import safe_filename
from core.states import ACTIVE, TERMINAL, TRANSITIONS, JobStatus


def test_terminal_states_have_no_way_out_and_every_active_state_can_fail_or_cancel() -> None:
    assert TERMINAL == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    for state in ACTIVE:
        assert {JobStatus.FAILED, JobStatus.CANCELLED} <= TRANSITIONS[state]
    assert JobStatus.SUCCEEDED in TRANSITIONS[JobStatus.RUNNING]
    assert JobStatus.SUCCEEDED not in TRANSITIONS[JobStatus.QUEUED]


def test_upload_names_cannot_traverse_paths() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\x\\data.jsonl") == "data.jsonl"
    assert safe_filename("a\x00b\n.jsonl") == "ab.jsonl"
    assert safe_filename("") == "upload"
