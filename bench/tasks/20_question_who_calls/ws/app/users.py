from app.storage import load_record


def get_user(user_id):
    # users are written by the admin tool, never here
    return load_record("user:" + user_id)
